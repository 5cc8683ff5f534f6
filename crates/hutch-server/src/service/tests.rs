//! The service over the fake runtime: creation, slots, per-key quotas, kill, recovery at
//! start, listing and signed-URL lookup.

use std::collections::BTreeMap;

use chrono::Utc;

use super::fake::{caller, req, status, Call, Harness, Op, LIMITS};
use super::*;
use crate::sandbox::SandboxRecord;

/// The agent configuration the runtime was given for the `i`th created sandbox.
fn agent_config_of(h: &Harness, i: usize) -> serde_json::Value {
    let spec = &h.rt.specs()[i];
    let (_, json) = spec
        .agent_env
        .iter()
        .find(|(k, _)| k == "HUTCH_AGENT_CONFIG")
        .expect("agent config");
    serde_json::from_str(json).expect("json")
}

#[tokio::test]
async fn create_gives_a_running_sandbox_with_the_default_timeout() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    assert_eq!(rec.state, SandboxState::Running);
    assert_eq!(rec.template_id, "base");
    assert_eq!(rec.alias.as_deref(), Some("base"));
    assert_eq!(
        (rec.end_at - rec.started_at).num_seconds(),
        DEFAULT_TIMEOUT_SECS as i64
    );
    assert_eq!(rec.cpu_count, LIMITS.cpus);
    assert_eq!(rec.memory_mb, LIMITS.memory_mb);
    assert!(crate::sandbox::valid_id(&rec.id));
    assert_eq!(h.svc.get(&rec.id).unwrap().id, rec.id);
    assert_eq!(h.svc.count(), 1);
}

#[tokio::test]
async fn create_stores_the_record() {
    let h = Harness::new(4);
    let rec = h
        .svc
        .create(CreateRequest {
            metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
            ..req("base")
        })
        .await
        .unwrap();
    let (stored, bad) = h.store.sandboxes().unwrap();
    assert!(bad.is_empty());
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, rec.id);
    assert_eq!(stored[0].metadata["k"], "v");
}

#[tokio::test]
async fn create_refuses_a_timeout_above_the_maximum() {
    let h = Harness::new(4);
    let err = h
        .svc
        .create(CreateRequest {
            timeout: Some(MAX_TIMEOUT_SECS + 1),
            ..req("base")
        })
        .await
        .unwrap_err();
    assert_eq!(status(&err), 400);
    assert_eq!(
        err.to_string(),
        "timeout 86401s is longer than the maximum of 86400s"
    );
    assert!(h.rt.calls().is_empty());
}

#[tokio::test]
async fn create_refuses_bad_environment_variable_names() {
    let h = Harness::new(4);
    let mut cases: Vec<(&str, &str, String)> = ["", "A=B", "A\0"]
        .into_iter()
        .map(|bad| {
            (
                bad,
                "x",
                format!("invalid environment variable name {bad:?}"),
            )
        })
        .collect();
    cases.push((
        "X",
        "a\0b",
        "environment variable \"X\" has a NUL byte in its value".to_string(),
    ));
    for (name, value, message) in cases {
        let err = h
            .svc
            .create(CreateRequest {
                env_vars: BTreeMap::from([(name.to_string(), value.to_string())]),
                ..req("base")
            })
            .await
            .unwrap_err();
        assert_eq!(status(&err), 400);
        assert_eq!(err.to_string(), message);
    }
    assert!(h.rt.calls().is_empty());
}

#[tokio::test]
async fn create_of_an_unknown_template_is_not_found() {
    let h = Harness::new(4);
    let err = h.svc.create(req("nope")).await.unwrap_err();
    assert_eq!(status(&err), 404);
    assert_eq!(err.to_string(), "template 'nope' not found");
}

#[tokio::test]
async fn create_while_the_defaults_build_is_unavailable() {
    let h = Harness::new(4);
    // A fresh registry is still building its default templates.
    let templates = Arc::new(Templates::default());
    let svc = Service::with_readiness(
        h.rt.clone(),
        h.store.clone(),
        templates,
        SandboxDefaults {
            limits: LIMITS,
            max_cpus: 64,
            max_memory_mb: 262_144,
            disk_overcommit: None,
        },
        Vec::new(),
        crate::agent_http::client(),
        h.ready.clone(),
    );
    let err = svc.create(req("code-interpreter-v1")).await.unwrap_err();
    assert_eq!(status(&err), 503);
    assert!(err.to_string().contains("still being built"));
}

#[tokio::test]
async fn create_hands_envs_token_and_defaults_to_the_agent() {
    let h = Harness::new(4);
    let rec = h
        .svc
        .create(CreateRequest {
            env_vars: BTreeMap::from([("FOO".to_string(), "bar".to_string())]),
            ..req("base")
        })
        .await
        .unwrap();
    let token = rec
        .envd_access_token
        .clone()
        .expect("every sandbox has a token");
    assert_eq!(token.len(), 48);
    let cfg = agent_config_of(&h, 0);
    assert_eq!(cfg["sandboxId"], rec.id.as_str());
    assert_eq!(cfg["envVars"]["FOO"], "bar");
    assert_eq!(cfg["accessToken"], token.as_str());
    assert_eq!(cfg["interpreter"], true);
    assert!(cfg["defaultUser"].is_null());
    let spec = &h.rt.specs()[0];
    assert!(spec.allow_internet);
    assert_eq!(spec.template_layers, vec![h.dir.0.join("rootfs-base")]);
}

#[tokio::test]
async fn every_sandbox_has_its_own_token() {
    let h = Harness::new(4);
    let a = h.svc.create(req("base")).await.unwrap();
    let b = h.svc.create(req("base")).await.unwrap();
    let (ta, tb) = (a.envd_access_token.unwrap(), b.envd_access_token.unwrap());
    assert_ne!(ta, tb);
    assert_eq!(agent_config_of(&h, 0)["accessToken"], ta.as_str());
}

#[tokio::test]
async fn create_without_internet_tells_the_runtime() {
    let h = Harness::new(4);
    let rec = h
        .svc
        .create(CreateRequest {
            allow_internet_access: Some(false),
            ..req("base")
        })
        .await
        .unwrap();
    assert!(!h.rt.specs()[0].allow_internet);
    assert_eq!(rec.allow_internet_access, Some(false));
}

#[tokio::test]
async fn a_custom_template_brings_env_user_workdir_and_resources() {
    let h = Harness::new(4);
    let mut t = h.custom_template("mine");
    t.env = BTreeMap::from([
        ("A".to_string(), "template".to_string()),
        ("B".to_string(), "template".to_string()),
    ]);
    t.user = Some("root".into());
    t.workdir = Some("/app".into());
    t.cpu_count = Some(4);
    t.memory_mb = Some(2048);
    t.start_cmd = Some("serve".into());
    let t = h.add_custom(t);
    let rec = h
        .svc
        .create(CreateRequest {
            env_vars: BTreeMap::from([("B".to_string(), "request".to_string())]),
            ..req("mine:latest")
        })
        .await
        .unwrap();
    assert_eq!(rec.template_id, t.id);
    assert_eq!(rec.alias.as_deref(), Some("mine"));
    assert_eq!((rec.cpu_count, rec.memory_mb), (4, 2048));
    assert_eq!(rec.layers, t.layers);
    // The request's variables win over the template's; only the request's are recorded.
    let cfg = agent_config_of(&h, 0);
    assert_eq!(cfg["envVars"]["A"], "template");
    assert_eq!(cfg["envVars"]["B"], "request");
    assert_eq!(rec.env_vars.len(), 1);
    assert_eq!(cfg["defaultUser"], "root");
    assert_eq!(cfg["defaultWorkdir"], "/app");
    // Its start command is waited for.
    assert_eq!(h.ready.waits.lock().unwrap()[0].2.as_deref(), Some("serve"));
}

#[tokio::test]
async fn a_build_sandbox_runs_no_interpreter_and_no_start_command() {
    let h = Harness::new(4);
    let mut t = h.custom_template("parent");
    t.start_cmd = Some("serve".into());
    h.add_custom(t);
    let rec = h
        .svc
        .create(CreateRequest {
            build: Some("b-1".into()),
            ..req("parent")
        })
        .await
        .unwrap();
    assert_eq!(rec.build.as_deref(), Some("b-1"));
    assert_eq!(agent_config_of(&h, 0)["interpreter"], false);
    assert_eq!(h.ready.waits.lock().unwrap()[0].2, None);
}

#[tokio::test]
async fn a_runtime_failure_at_create_is_internal_and_frees_the_slot() {
    let h = Harness::new(1);
    h.rt.fail(Op::Create, true);
    let err = h.svc.create(req("base")).await.unwrap_err();
    assert_eq!(status(&err), 500);
    assert_eq!(
        err.to_string(),
        "creating the sandbox failed: fake Create failure"
    );
    assert_eq!(h.svc.count(), 0);
    h.rt.fail(Op::Create, false);
    let rec = h.svc.create(req("base")).await.unwrap();
    assert_eq!(rec.slot, 0);
}

#[tokio::test]
async fn a_sandbox_that_never_gets_ready_is_killed() {
    let h = Harness::new(2);
    h.ready.fail_with(Some("the agent did not answer"));
    let err = h.svc.create(req("base")).await.unwrap_err();
    assert_eq!(status(&err), 500);
    assert_eq!(err.to_string(), "the agent did not answer");
    assert_eq!(h.svc.count(), 0);
    assert!(h
        .rt
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Destroy { init: Some(_), .. })));
    assert!(h.store.sandboxes().unwrap().0.is_empty());
}

#[tokio::test]
async fn slots_are_taken_lowest_first_and_reused_after_kill() {
    let h = Harness::new(4);
    let a = h.svc.create(req("base")).await.unwrap();
    let b = h.svc.create(req("base")).await.unwrap();
    assert_eq!((a.slot, b.slot), (0, 1));
    h.svc.kill(&a.id).await.unwrap();
    let c = h.svc.create(req("base")).await.unwrap();
    assert_eq!(c.slot, 0);
    assert_eq!(
        h.svc.net(&c.id).unwrap().sandbox_ip,
        h.rt.net_for(0).sandbox_ip
    );
}

#[tokio::test]
async fn no_free_slot_is_unavailable() {
    let h = Harness::new(2);
    h.svc.create(req("base")).await.unwrap();
    h.svc.create(req("base")).await.unwrap();
    let err = h.svc.create(req("base")).await.unwrap_err();
    assert_eq!(status(&err), 503);
    assert_eq!(err.to_string(), "all 2 sandbox slots are in use");
}

#[tokio::test]
async fn a_key_at_its_limit_is_rate_limited() {
    let h = Harness::new(8);
    let key = caller("k1", Some(2));
    for _ in 0..2 {
        h.svc
            .create(CreateRequest {
                caller: Some(key.clone()),
                ..req("base")
            })
            .await
            .unwrap();
    }
    let err = h
        .svc
        .create(CreateRequest {
            caller: Some(key),
            ..req("base")
        })
        .await
        .unwrap_err();
    assert_eq!(status(&err), 429);
    assert!(err
        .to_string()
        .starts_with("Rate limit exceeded: this API key may hold at most 2 sandboxes at once"));
    assert_eq!(h.rt.specs().len(), 2);
}

#[tokio::test]
async fn quotas_are_per_key_and_freed_by_kill() {
    let h = Harness::new(8);
    let one = caller("k1", Some(1));
    let a = h
        .svc
        .create(CreateRequest {
            caller: Some(one.clone()),
            ..req("base")
        })
        .await
        .unwrap();
    assert_eq!(a.key_id.as_deref(), Some("k1"));
    // Another key, the server's own key and an unlimited key are not held back.
    for c in [Some(caller("k2", Some(1))), None, Some(caller("k3", None))] {
        h.svc
            .create(CreateRequest {
                caller: c,
                ..req("base")
            })
            .await
            .unwrap();
    }
    h.svc.kill(&a.id).await.unwrap();
    h.svc
        .create(CreateRequest {
            caller: Some(one),
            ..req("base")
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failed_create_does_not_count_against_the_key() {
    let h = Harness::new(4);
    let key = caller("k1", Some(1));
    h.rt.fail(Op::Create, true);
    let with_key = || CreateRequest {
        caller: Some(key.clone()),
        ..req("base")
    };
    assert!(h.svc.create(with_key()).await.is_err());
    h.rt.fail(Op::Create, false);
    h.svc.create(with_key()).await.unwrap();
}

#[tokio::test]
async fn kill_destroys_and_forgets_the_sandbox() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    let route = h.svc.route(&rec.id).unwrap();
    h.svc.kill(&rec.id).await.unwrap();
    assert!(*route.killed.borrow(), "proxied streams learn of the kill");
    assert!(h.rt.calls().contains(&Call::Destroy {
        id: rec.id.clone(),
        net: Some(rec.slot),
        init: Some((rec.pid, rec.pid_start)),
    }));
    assert!(h.store.sandboxes().unwrap().0.is_empty());
    let err = h.svc.get(&rec.id).unwrap_err();
    assert_eq!(status(&err), 404);
    assert_eq!(
        err.to_string(),
        format!(
            "sandbox \"{}\" doesn't exist or you don't have access to it",
            rec.id
        )
    );
}

#[tokio::test]
async fn killing_an_unknown_sandbox_is_not_found() {
    let h = Harness::new(4);
    let err = h.svc.kill("nosuch").await.unwrap_err();
    assert_eq!(status(&err), 404);
    assert_eq!(err.to_string(), "sandbox \"nosuch\" not found");
}

#[tokio::test]
async fn a_failed_teardown_is_internal_but_the_sandbox_is_gone() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    h.rt.fail(Op::Destroy, true);
    let err = h.svc.kill(&rec.id).await.unwrap_err();
    assert_eq!(status(&err), 500);
    assert_eq!(
        err.to_string(),
        format!("killing sandbox {}: fake Destroy failure", rec.id)
    );
    assert_eq!(h.svc.count(), 0);
    assert!(std::error::Error::source(&err).is_some());
}

fn stored(id: &str, slot: u32, pid: i32) -> SandboxRecord {
    let now = Utc::now();
    SandboxRecord {
        id: id.to_string(),
        template_id: "base".into(),
        alias: Some("base".into()),
        metadata: BTreeMap::new(),
        env_vars: BTreeMap::new(),
        started_at: now,
        end_at: now + chrono::Duration::seconds(300),
        state: SandboxState::Running,
        cpu_count: 1,
        memory_mb: 512,
        disk_mb: 1024,
        envd_access_token: None,
        allow_internet_access: None,
        traffic_access_token: None,
        auto_resume: false,
        auto_pause: false,
        auto_pause_filesystem: false,
        slot,
        pid,
        pid_start: 99,
        key_id: None,
        team: None,
        layers: Vec::new(),
        build: None,
        saved_disk: None,
        volume_mounts: Vec::new(),
        network: None,
    }
}

#[tokio::test]
async fn recovery_adopts_live_sandboxes_and_drops_dead_ones() {
    let h = Harness::recovering(
        4,
        vec![stored("alive", 0, 10), stored("dead", 1, 11)],
        |rt| rt.add_alive(10, 99),
    );
    assert_eq!(h.svc.count(), 1);
    assert!(h.svc.get("alive").is_ok());
    assert!(h.rt.calls().contains(&Call::Destroy {
        id: "dead".into(),
        net: Some(1),
        init: None,
    }));
    let ids: Vec<String> = h
        .store
        .sandboxes()
        .unwrap()
        .0
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec!["alive".to_string()]);
    // The adopted sandbox keeps its slot.
    let rec = h.svc.create(req("base")).await.unwrap();
    assert_eq!(rec.slot, 1);
}

#[tokio::test]
async fn recovery_ends_the_sandboxes_of_interrupted_builds() {
    let mut build = stored("builder", 0, 10);
    build.build = Some("b-1".into());
    let h = Harness::recovering(4, vec![build], |rt| rt.add_alive(10, 99));
    assert_eq!(h.svc.count(), 0);
    assert!(h.rt.calls().contains(&Call::Destroy {
        id: "builder".into(),
        net: Some(0),
        init: Some((10, 99)),
    }));
    assert!(h.store.sandboxes().unwrap().0.is_empty());
}

#[tokio::test]
async fn recovery_removes_leftovers_of_unknown_sandboxes() {
    let h = Harness::recovering(4, vec![stored("alive", 0, 10)], |rt| {
        rt.add_alive(10, 99);
        rt.add_leftovers(&["alive", "ghost"], &[0, 3]);
    });
    let calls = h.rt.calls();
    assert!(calls.contains(&Call::Destroy {
        id: "ghost".into(),
        net: None,
        init: None,
    }));
    assert!(!calls
        .iter()
        .any(|c| matches!(c, Call::Destroy { id, .. } if id == "alive")));
    assert!(calls.contains(&Call::ReleaseSlot(3)));
    assert!(!calls.contains(&Call::ReleaseSlot(0)));
}

#[test]
fn noinet_addresses_lists_sandboxes_without_egress() {
    let mut a = stored("a", 0, 1);
    a.allow_internet_access = Some(false);
    let mut b = stored("b", 1, 2);
    b.allow_internet_access = Some(true);
    let c = stored("c", 2, 3);
    let net = hutch_runtime::NetConfig::default();
    assert_eq!(
        Service::noinet_addresses(&[a, b, c], &net),
        vec![net.slot(0).sandbox_ip]
    );
}

#[tokio::test]
async fn a_signed_url_names_the_sandbox_whose_token_signed_it() {
    let h = Harness::new(4);
    let other = h.svc.create(req("base")).await.unwrap();
    let secure = h.svc.create(req("base")).await.unwrap();
    let token = secure.envd_access_token.clone().unwrap();
    let sig = file_signature("/f.txt", "read", "user", &token, Some("123"));
    assert!(sig.starts_with("v1_"));
    assert_eq!(
        h.svc
            .find_by_signature("/f.txt", "read", "user", &sig, Some("123")),
        Some(secure.id.clone())
    );
    // Any other path, operation or expiration does not match; nor does another sandbox's.
    assert_eq!(
        h.svc
            .find_by_signature("/g.txt", "read", "user", &sig, Some("123")),
        None
    );
    assert_eq!(
        h.svc
            .find_by_signature("/f.txt", "write", "user", &sig, Some("123")),
        None
    );
    assert_eq!(
        h.svc
            .find_by_signature("/f.txt", "read", "user", &sig, None),
        None
    );
    let theirs = file_signature(
        "/f.txt",
        "read",
        "user",
        other.envd_access_token.as_deref().unwrap(),
        Some("123"),
    );
    assert_eq!(
        h.svc
            .find_by_signature("/f.txt", "read", "user", &theirs, Some("123")),
        Some(other.id.clone())
    );
}

#[test]
fn signatures_without_expiration_differ_from_ones_with() {
    let a = file_signature("/p", "read", "user", "tok", None);
    let b = file_signature("/p", "read", "user", "tok", Some("1"));
    assert_ne!(a, b);
    assert!(!a.contains('='), "unpadded base64");
}

#[tokio::test]
async fn a_sandbox_whose_disk_could_not_be_filled_on_the_host_is_refused() {
    let h = Harness::new(2);
    assert!(h.svc.check_free_disk(1).is_ok());
    let huge = u64::MAX >> 21;
    let err = h.svc.check_free_disk(huge).unwrap_err();
    assert_eq!(status(&err), 503);
    let msg = err.to_string();
    assert!(
        msg.starts_with("not enough free disk space on the host for a sandbox: ")
            && msg.contains(&format!("its disk may grow to {huge} MiB")),
        "{msg}"
    );
}

#[tokio::test]
async fn with_an_overcommit_ratio_what_every_disk_may_still_take_counts() {
    use std::sync::atomic::Ordering::Relaxed;
    let h = Harness::with_disk_overcommit(2, 1.0);
    let free_mb = hutch_sys::mount::available(h.dir.0.as_path()).unwrap() >> 20;
    // The sandboxes' disks may still take half of what is free.
    h.rt.disks_unfilled.store((free_mb / 2) << 20, Relaxed);
    assert!(h.svc.check_free_disk(free_mb / 4).is_ok());
    let err = h.svc.check_free_disk(free_mb * 3 / 4).unwrap_err();
    assert_eq!(status(&err), 503);
    let msg = err.to_string();
    assert!(
        msg.contains("may still grow by") && msg.contains("--disk-overcommit"),
        "{msg}"
    );
    // Twice the free space may be promised with a ratio of 2; never more than is free
    // for the new disk itself.
    let h2 = Harness::with_disk_overcommit(2, 2.0);
    h2.rt.disks_unfilled.store((free_mb / 2) << 20, Relaxed);
    assert!(h2.svc.check_free_disk(free_mb * 3 / 4).is_ok());
    assert!(h2.svc.check_free_disk(free_mb * 2).is_err());
    // Without a ratio only the new disk must fit.
    let h3 = Harness::new(2);
    h3.rt.disks_unfilled.store(u64::MAX >> 1, Relaxed);
    assert!(h3.svc.check_free_disk(free_mb / 4).is_ok());
}

#[tokio::test]
async fn a_team_at_its_limit_is_rate_limited_whichever_key_asks() {
    use super::fake::team_caller;
    let h = Harness::new(8);
    let mut a1 = team_caller("a1", None, "acme");
    a1.team.max_sandboxes = Some(2);
    let mut a2 = team_caller("a2", None, "acme");
    a2.team.max_sandboxes = Some(2);
    for c in [&a1, &a2] {
        h.svc
            .create(CreateRequest {
                caller: Some(c.clone()),
                ..req("base")
            })
            .await
            .unwrap();
    }
    let err = h
        .svc
        .create(CreateRequest {
            caller: Some(a1.clone()),
            ..req("base")
        })
        .await
        .unwrap_err();
    assert_eq!(status(&err), 429);
    assert!(err
        .to_string()
        .starts_with("Rate limit exceeded: team acme may hold at most 2 sandboxes at once"));
    // Another team is not held back.
    h.svc
        .create(CreateRequest {
            caller: Some(team_caller("b", None, "other")),
            ..req("base")
        })
        .await
        .unwrap();
}
