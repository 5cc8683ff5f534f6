//! The service over the fake runtime: pause/resume, end times, the lifecycle loop,
//! metrics and listing.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use hutch_runtime::runtime::Usage;

use super::fake::{req, status, Call, Harness, Op};
use super::*;

#[tokio::test]
async fn pause_freezes_and_a_second_pause_conflicts() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    h.svc.pause(&rec.id).await.unwrap();
    assert_eq!(h.svc.get(&rec.id).unwrap().state, SandboxState::Paused);
    assert_eq!(h.svc.route(&rec.id).unwrap().state, SandboxState::Paused);
    assert!(h.rt.calls().contains(&Call::Pause(rec.id.clone())));
    assert_eq!(
        h.store.sandboxes().unwrap().0[0].state,
        SandboxState::Paused
    );
    let err = h.svc.pause(&rec.id).await.unwrap_err();
    assert_eq!(status(&err), 409);
    assert_eq!(
        err.to_string(),
        format!("sandbox {} is already paused", rec.id)
    );
}

#[tokio::test]
async fn a_failed_pause_leaves_the_sandbox_running() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    h.rt.fail(Op::Pause, true);
    let err = h.svc.pause(&rec.id).await.unwrap_err();
    assert_eq!(status(&err), 500);
    assert_eq!(
        err.to_string(),
        format!("pausing sandbox {}: fake Pause failure", rec.id)
    );
    assert_eq!(h.svc.get(&rec.id).unwrap().state, SandboxState::Running);
}

#[tokio::test]
async fn resume_thaws_a_paused_sandbox_and_refuses_a_running_one() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    let err = h.svc.resume(&rec.id, None).await.unwrap_err();
    assert_eq!(status(&err), 409);
    assert_eq!(
        err.to_string(),
        format!("sandbox {} is already running", rec.id)
    );
    h.svc.pause(&rec.id).await.unwrap();
    let resumed = h.svc.resume(&rec.id, Some(60)).await.unwrap();
    assert_eq!(resumed.state, SandboxState::Running);
    assert!(resumed.end_at <= Utc::now() + chrono::Duration::seconds(60));
    assert!(h.rt.calls().contains(&Call::Resume(rec.id.clone())));
}

#[tokio::test]
async fn a_failed_resume_keeps_the_sandbox_paused() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    h.svc.pause(&rec.id).await.unwrap();
    h.rt.fail(Op::Resume, true);
    let err = h.svc.resume(&rec.id, None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("resuming sandbox {}: fake Resume failure", rec.id)
    );
    assert_eq!(h.svc.get(&rec.id).unwrap().state, SandboxState::Paused);
}

#[tokio::test]
async fn connect_resumes_a_paused_sandbox() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    h.svc.pause(&rec.id).await.unwrap();
    let (after, resumed) = h.svc.connect(&rec.id, Some(10)).await.unwrap();
    assert!(resumed);
    assert_eq!(after.state, SandboxState::Running);
    // A resumed sandbox gets exactly the new timeout, even if shorter than before.
    assert!(after.end_at < rec.end_at);
}

#[tokio::test]
async fn connect_to_a_running_sandbox_never_shortens_it() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    let (after, resumed) = h.svc.connect(&rec.id, Some(10)).await.unwrap();
    assert!(!resumed);
    assert_eq!(after.end_at, rec.end_at);
    let (after, _) = h.svc.connect(&rec.id, Some(3600)).await.unwrap();
    assert!(after.end_at > rec.end_at);
    assert!(!h.rt.calls().iter().any(|c| matches!(c, Call::Resume(_))));
}

#[tokio::test]
async fn operations_on_unknown_sandboxes_are_not_found() {
    let h = Harness::new(4);
    let errs = [
        h.svc.pause("x").await.unwrap_err(),
        h.svc.resume("x", None).await.unwrap_err(),
        h.svc.connect("x", None).await.unwrap_err(),
        h.svc.set_timeout("x", Some(5)).await.unwrap_err(),
        h.svc.refresh("x", None).await.unwrap_err(),
        h.svc.metrics("x", None, None).unwrap_err(),
    ];
    for e in errs {
        assert_eq!(status(&e), 404);
        assert_eq!(
            e.to_string(),
            "sandbox \"x\" doesn't exist or you don't have access to it"
        );
    }
    assert!(h.svc.route("x").is_none());
    assert!(h.svc.net("x").is_none());
}

#[tokio::test]
async fn set_timeout_may_shorten_and_refresh_only_extends() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    h.svc.set_timeout(&rec.id, Some(5)).await.unwrap();
    let short = h.svc.get(&rec.id).unwrap().end_at;
    assert!(short < rec.end_at);
    h.svc.refresh(&rec.id, Some(1)).await.unwrap();
    assert_eq!(h.svc.get(&rec.id).unwrap().end_at, short);
    h.svc.refresh(&rec.id, Some(600)).await.unwrap();
    let long = h.svc.get(&rec.id).unwrap().end_at;
    assert!(long > rec.end_at);
    assert_eq!(h.store.sandboxes().unwrap().0[0].end_at, long);
}

#[tokio::test]
async fn end_times_above_the_maximum_are_refused() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    for err in [
        h.svc
            .set_timeout(&rec.id, Some(MAX_TIMEOUT_SECS + 1))
            .await
            .unwrap_err(),
        h.svc
            .refresh(&rec.id, Some(MAX_TIMEOUT_SECS + 1))
            .await
            .unwrap_err(),
        h.svc
            .connect(&rec.id, Some(MAX_TIMEOUT_SECS + 1))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status(&err), 400);
    }
    assert_eq!(validate_timeout(None).unwrap(), DEFAULT_TIMEOUT_SECS);
    assert_eq!(
        validate_timeout(Some(MAX_TIMEOUT_SECS)).unwrap(),
        MAX_TIMEOUT_SECS
    );
}

#[tokio::test]
async fn an_expired_sandbox_is_killed() {
    let h = Harness::new(4);
    let keep = h.svc.create(req("base")).await.unwrap();
    let expire = h.svc.create(req("base")).await.unwrap();
    h.svc.set_timeout(&expire.id, Some(0)).await.unwrap();
    h.svc.check_all(false).await;
    assert!(h.svc.get(&expire.id).is_err());
    assert!(h.svc.get(&keep.id).is_ok());
}

#[tokio::test]
async fn an_expired_auto_pause_sandbox_is_paused_not_killed() {
    let h = Harness::new(4);
    let rec = h
        .svc
        .create(CreateRequest {
            auto_pause: true,
            ..req("base")
        })
        .await
        .unwrap();
    h.svc.set_timeout(&rec.id, Some(0)).await.unwrap();
    h.svc.check_all(false).await;
    assert_eq!(h.svc.get(&rec.id).unwrap().state, SandboxState::Paused);
    // A paused sandbox does not expire.
    h.svc.check_all(false).await;
    assert_eq!(h.svc.get(&rec.id).unwrap().state, SandboxState::Paused);
    assert_eq!(
        h.rt.calls()
            .iter()
            .filter(|c| matches!(c, Call::Pause(_)))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_sandbox_whose_init_exited_is_released() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    h.rt.exit(rec.pid, rec.pid_start);
    h.svc.check_all(false).await;
    assert_eq!(h.svc.count(), 0);
    assert!(h.store.sandboxes().unwrap().0.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_lifecycle_loop_expires_sandboxes_on_its_own() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    h.svc.set_timeout(&rec.id, Some(0)).await.unwrap();
    let task = tokio::spawn(Arc::clone(&h.svc).lifecycle_loop());
    // Time is paused: the runtime advances it whenever every task waits.
    while h.svc.count() > 0 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    task.abort();
    assert!(h
        .rt
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Destroy { id, .. } if *id == rec.id)));
}

#[tokio::test]
async fn metrics_are_sampled_from_the_runtime() {
    let h = Harness::new(4);
    let mut usage = Usage::default();
    usage.cgroup.mem_used = 1 << 20;
    usage.cgroup.mem_cache = 4096;
    usage.disk_used = 10;
    usage.disk_total = 100;
    h.rt.set_usage(usage);
    let rec = h.svc.create(req("base")).await.unwrap();
    let m = h.svc.metrics(&rec.id, None, None).unwrap();
    assert_eq!(m.len(), 1, "create takes the first sample");
    assert_eq!(m[0].mem_used, 1 << 20);
    assert_eq!(m[0].mem_cache, 4096);
    assert_eq!(m[0].mem_total, rec.memory_mb * 1024 * 1024);
    assert_eq!((m[0].disk_used, m[0].disk_total), (10, 100));
    assert_eq!(m[0].cpu_count, rec.cpu_count);
    h.svc.check_all(true).await;
    assert_eq!(h.svc.metrics(&rec.id, None, None).unwrap().len(), 2);
}

#[tokio::test]
async fn metrics_are_filtered_by_time() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    let now = Utc::now().timestamp();
    assert_eq!(
        h.svc
            .metrics(&rec.id, Some(now - 60), Some(now + 60))
            .unwrap()
            .len(),
        1
    );
    assert!(h
        .svc
        .metrics(&rec.id, Some(now + 60), None)
        .unwrap()
        .is_empty());
    assert!(h
        .svc
        .metrics(&rec.id, None, Some(now - 60))
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_sandbox_without_usage_figures_has_no_metrics() {
    let h = Harness::new(4);
    h.rt.fail(Op::Usage, true);
    let rec = h.svc.create(req("base")).await.unwrap();
    assert!(h.svc.metrics(&rec.id, None, None).unwrap().is_empty());
}

async fn three(h: &Harness) -> Vec<crate::sandbox::SandboxRecord> {
    let mut out = Vec::new();
    for (i, tag) in ["a", "b", "c"].iter().enumerate() {
        let rec = h
            .svc
            .create(CreateRequest {
                metadata: BTreeMap::from([
                    ("tag".to_string(), tag.to_string()),
                    ("odd".to_string(), (i % 2 == 0).to_string()),
                ]),
                ..req("base")
            })
            .await
            .unwrap();
        out.push(rec);
    }
    out
}

fn ids(recs: &[crate::sandbox::SandboxRecord]) -> Vec<String> {
    recs.iter().map(|r| r.id.clone()).collect()
}

#[tokio::test]
async fn list_filters_by_state_metadata_and_template() {
    let h = Harness::new(8);
    let recs = three(&h).await;
    h.svc.pause(&recs[1].id).await.unwrap();
    let q = |f: fn(&mut ListQuery)| {
        let mut q = ListQuery::default();
        f(&mut q);
        h.svc.list(&q).unwrap().0
    };
    assert_eq!(q(|_| {}).len(), 3);
    assert_eq!(
        ids(&q(|q| q.states = vec![SandboxState::Paused])),
        vec![recs[1].id.clone()]
    );
    assert_eq!(q(|q| q.states = vec![SandboxState::Running]).len(), 2);
    assert_eq!(
        ids(&q(|q| q.metadata = vec![("tag".into(), "c".into())])),
        vec![recs[2].id.clone()]
    );
    assert_eq!(
        q(|q| q.metadata = vec![("odd".into(), "true".into()), ("tag".into(), "a".into())]).len(),
        1
    );
    assert_eq!(q(|q| q.template = Some("base:latest".into())).len(), 3);
    assert!(q(|q| q.template = Some("other".into())).is_empty());
    assert!(q(|q| q.started_after = Some(Utc::now() + chrono::Duration::hours(1))).is_empty());
}

#[tokio::test]
async fn list_pages_through_everything_once_in_both_orders() {
    let h = Harness::new(8);
    let recs = three(&h).await;
    for ascending in [false, true] {
        let mut seen = Vec::new();
        let mut q = ListQuery {
            limit: Some(2),
            ascending,
            ..ListQuery::default()
        };
        loop {
            let (page, next) = h.svc.list(&q).unwrap();
            assert!(page.len() <= 2);
            seen.extend(ids(&page));
            match next {
                Some(t) => q.next_token = Some(t),
                None => break,
            }
        }
        let mut all = ids(&recs);
        all.sort();
        let mut got = seen.clone();
        got.sort();
        assert_eq!(got, all, "every sandbox exactly once");
        let (full, none) = h
            .svc
            .list(&ListQuery {
                ascending,
                ..ListQuery::default()
            })
            .unwrap();
        assert!(none.is_none());
        assert_eq!(ids(&full), seen, "pages follow the unpaged order");
    }
}

#[tokio::test]
async fn list_is_newest_first_unless_ascending() {
    let h = Harness::new(8);
    three(&h).await;
    let (desc, _) = h.svc.list(&ListQuery::default()).unwrap();
    assert!(desc.windows(2).all(|w| w[0].started_at >= w[1].started_at));
    let (asc, _) = h
        .svc
        .list(&ListQuery {
            ascending: true,
            ..ListQuery::default()
        })
        .unwrap();
    assert_eq!(ids(&asc), ids(&desc).into_iter().rev().collect::<Vec<_>>());
}

#[tokio::test]
async fn commit_layer_saves_the_upper_dir_through_the_runtime() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    let dest = h.dir.0.join("layer");
    h.svc.commit_layer(&rec.id, dest.clone()).await.unwrap();
    assert!(h.rt.calls().contains(&Call::Commit {
        id: rec.id.clone(),
        dest: dest.clone()
    }));
    h.rt.fail(Op::Commit, true);
    let err = h.svc.commit_layer(&rec.id, dest).await.unwrap_err();
    assert_eq!(err.to_string(), "fake Commit failure");
    assert_eq!(status(&err), 500);
}

#[tokio::test]
async fn layers_in_use_are_those_of_live_sandboxes() {
    let h = Harness::new(4);
    let rec = h.svc.create(req("base")).await.unwrap();
    assert!(h.svc.layers_in_use().contains(&h.dir.0.join("rootfs-base")));
    h.svc.kill(&rec.id).await.unwrap();
    assert!(h.svc.layers_in_use().is_empty());
    assert_eq!(h.svc.state_dir(), h.dir.0.as_path());
}

#[tokio::test]
async fn a_sandbox_belongs_to_its_callers_team_and_lists_only_there() {
    use super::fake::team_caller;
    use crate::tenancy::Scope;
    let h = Harness::new(4);
    let rec = h
        .svc
        .create(CreateRequest {
            caller: Some(team_caller("ka", None, "a")),
            ..req("base")
        })
        .await
        .unwrap();
    assert_eq!(rec.team.as_deref(), Some("a"));
    let ops = h.svc.create(req("base")).await.unwrap();
    assert_eq!(
        ops.team, None,
        "the operator's own key creates in the default team"
    );
    let listed = |scope: Scope| -> Vec<String> {
        let q = ListQuery {
            scope: Some(scope),
            ..ListQuery::default()
        };
        h.svc
            .list(&q)
            .unwrap()
            .0
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(listed(Scope::team("a")), vec![rec.id.clone()]);
    assert!(listed(Scope::team("b")).is_empty());
    assert_eq!(
        listed(Scope::team(crate::tenancy::DEFAULT_TEAM)),
        vec![ops.id.clone()]
    );
    assert_eq!(listed(Scope::operator()).len(), 2);
}

#[tokio::test]
async fn a_pause_without_memory_saves_the_files_frees_the_slot_and_a_connect_boots_on_them() {
    let h = Harness::new(2);
    let rec = h.svc.create(req("base")).await.unwrap();
    h.svc.pause_filesystem(&rec.id).await.unwrap();
    let paused = h.svc.get(&rec.id).unwrap();
    assert!(paused.is_stopped() && paused.state == SandboxState::Paused);
    let saved = paused.saved_disk.clone().unwrap();
    assert!(saved.starts_with(h.dir.0.join("paused")));
    let calls = h.rt.calls();
    assert!(calls.contains(&Call::Commit {
        id: rec.id.clone(),
        dest: saved.clone()
    }));
    assert!(calls.contains(&Call::Destroy {
        id: rec.id.clone(),
        net: Some(rec.slot),
        init: Some((rec.pid, rec.pid_start)),
    }));
    assert!(h.svc.net(&rec.id).is_none());
    assert!(matches!(
        h.svc.pause_filesystem(&rec.id).await,
        Err(ServiceError::AlreadyPaused { .. })
    ));
    // Its slot is free for another sandbox; nothing of it is checked for life.
    let other = h.svc.create(req("base")).await.unwrap();
    assert_eq!(other.slot, rec.slot);
    h.svc.check_all(false).await;
    assert!(h.svc.get(&rec.id).is_ok());

    // The fake copies nothing: the saved files are made here.
    std::fs::create_dir_all(&saved).unwrap();
    let (booted, resumed) = h.svc.connect(&rec.id, Some(60)).await.unwrap();
    assert!(resumed && !booted.is_stopped() && booted.state == SandboxState::Running);
    assert_ne!(booted.slot, other.slot);
    assert_eq!(booted.envd_access_token, rec.envd_access_token);
    let spec = h.rt.specs().into_iter().last().unwrap();
    assert_eq!(spec.id, rec.id);
    assert_eq!(spec.seed_upper.as_deref(), Some(saved.as_path()));
    assert!(!saved.exists(), "the saved files go once it runs again");
    assert_eq!(h.store.sandboxes().unwrap().0.len(), 2);
}

#[tokio::test]
async fn a_sandbox_paused_without_memory_is_killed_without_the_runtime_and_survives_restarts() {
    let h = Harness::new(2);
    let rec = h.svc.create(req("base")).await.unwrap();
    h.svc.pause_filesystem(&rec.id).await.unwrap();
    let saved = h.svc.get(&rec.id).unwrap().saved_disk.unwrap();
    std::fs::create_dir_all(&saved).unwrap();
    let stray = h.dir.0.join("paused").join("gone-1234");
    std::fs::create_dir_all(&stray).unwrap();

    // A restart adopts it as it is (its files are there) and removes what nobody names.
    let records = h.store.sandboxes().unwrap().0;
    let before = h.rt.calls().len();
    h.svc.recover(records);
    assert_eq!(
        h.rt.calls()[before..]
            .iter()
            .filter(|c| matches!(c, Call::Destroy { .. }))
            .count(),
        0,
        "nothing of it is destroyed"
    );
    let h2 = h;
    assert!(h2.svc.get(&rec.id).unwrap().is_stopped());
    assert!(saved.is_dir() && !stray.exists());

    let before = h2.rt.calls().len();
    h2.svc.kill(&rec.id).await.unwrap();
    assert_eq!(
        h2.rt.calls().len(),
        before,
        "a stopped sandbox has nothing in the runtime"
    );
    assert!(!saved.exists());
    assert!(h2.store.sandboxes().unwrap().0.is_empty());
}

#[tokio::test]
async fn rebooting_a_sandbox_paused_with_memory_thaws_ends_and_boots_it() {
    let h = Harness::new(2);
    let rec = h.svc.create(req("base")).await.unwrap();
    h.svc.pause(&rec.id).await.unwrap();
    let (rebooted, resumed) = h.svc.connect_with(&rec.id, Some(60), false).await.unwrap();
    assert!(resumed && rebooted.state == SandboxState::Running && !rebooted.is_stopped());
    assert_ne!(rebooted.pid, rec.pid, "a new init");
    let calls = h.rt.calls();
    let at = |c: &Call| calls.iter().position(|x| x == c);
    let resume = at(&Call::Resume(rec.id.clone())).expect("thawed first");
    let commit = calls
        .iter()
        .position(|c| matches!(c, Call::Commit { .. }))
        .expect("saved");
    assert!(resume < commit, "{calls:?}");
}
