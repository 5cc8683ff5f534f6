//! Builds over the fake runtime: requests, uploads, starting, status, deletion, sweeping.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::service::fake::{status, Harness};

fn builds(h: &Harness) -> Arc<Builds> {
    Builds::new(Arc::clone(&h.svc))
}

fn op() -> Scope {
    Scope::operator()
}

fn spec(steps: serde_json::Value) -> BuildSpec {
    serde_json::from_value(serde_json::json!({ "steps": steps, "fromTemplate": "base" }))
        .expect("a build spec")
}

#[tokio::test]
async fn requests_are_checked() {
    let h = Harness::new(2);
    let b = builds(&h);
    let cases: [(&str, Option<u32>, Option<u64>, &str); 4] = [
        (
            "Bad",
            None,
            None,
            "invalid template name \"Bad\": use lowercase letters, digits, '-', '_' and '.'",
        ),
        (
            "base",
            None,
            None,
            "'base' is a built-in template; choose another name",
        ),
        ("ok", Some(65), None, "cpuCount 65 is out of range: this server allows 1 to 64 CPUs for your team's templates"),
        (
            "ok",
            None,
            Some(64),
            "memoryMB 64 is out of range: this server allows 128 to 262144 MiB for your team's templates",
        ),
    ];
    for (name, cpu, mem, message) in cases {
        let err = b.request(name, cpu, mem, None).unwrap_err();
        assert_eq!(status(&err), 400);
        assert_eq!(err.to_string(), message);
    }
}

#[tokio::test]
async fn a_name_keeps_its_template_id_across_requests() {
    let h = Harness::new(2);
    let b = builds(&h);
    let first = b.request("app:v1", Some(2), Some(1024), None).unwrap();
    assert_eq!(first.name, "app");
    let second = b.request("app", None, None, None).unwrap();
    assert_eq!(first.template_id, second.template_id);
    assert_ne!(first.build_id, second.build_id);
    assert_ne!(first.upload_token, second.upload_token);
    let built = h.add_custom(h.custom_template("done"));
    assert_eq!(
        b.request("done", None, None, None).unwrap().template_id,
        built.id
    );
}

#[tokio::test]
async fn file_status_needs_a_hash_and_a_waiting_build() {
    let h = Harness::new(2);
    let b = builds(&h);
    let err = b.file_status("t", "../x", &op()).unwrap_err();
    assert_eq!(
        (status(&err), err.to_string()),
        (400, "invalid files hash \"../x\"".into())
    );
    let err = b.file_status("t", "ab", &op()).unwrap_err();
    assert_eq!(
        (status(&err), err.to_string()),
        (404, "template 't' not found".into())
    );
    let build = b.request("app", None, None, None).unwrap();
    let (present, token) = b.file_status(&build.template_id, "ab", &op()).unwrap();
    assert!(!present);
    assert_eq!(token, build.upload_token);
}

#[tokio::test]
async fn uploads_need_the_builds_token() {
    let h = Harness::new(2);
    let b = builds(&h);
    let build = b.request("app", None, None, None).unwrap();
    b.file_status(&build.template_id, "ab", &op()).unwrap();
    let err = b
        .upload(
            &build.template_id,
            "ab",
            "wrong",
            axum::body::Body::from("x"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (status(&err), err.to_string()),
        (401, "invalid or expired upload token".into())
    );
    b.upload(
        &build.template_id,
        "ab",
        &build.upload_token,
        axum::body::Body::from("archive"),
    )
    .await
    .unwrap();
    let (present, _) = b.file_status(&build.template_id, "ab", &op()).unwrap();
    assert!(present);
    let stored = std::fs::read_to_string(h.dir.0.join("templates/files/default/ab")).unwrap();
    assert_eq!(stored, "archive");
}

#[tokio::test]
async fn starting_checks_the_build_and_its_steps() {
    let h = Harness::new(2);
    let b = builds(&h);
    let err = b
        .start("t", "nope", BuildSpec::default(), &op())
        .unwrap_err();
    assert_eq!(status(&err), 404);
    assert_eq!(err.to_string(), "build 'nope' of template 't' not found");
    let build = b.request("app", None, None, None).unwrap();
    let err = b
        .start(
            &build.template_id,
            &build.build_id,
            spec(serde_json::json!([{"type": "COPY", "args": ["a", "b"], "filesHash": "ff"}])),
            &op(),
        )
        .unwrap_err();
    assert_eq!(status(&err), 400);
    assert_eq!(
        err.to_string(),
        "step 1 (COPY a): its files (hash \"ff\") were not uploaded"
    );
    // A refused start leaves the build waiting for its files.
    assert!(b.file_status(&build.template_id, "ff", &op()).is_ok());
}

/// Waits until the build leaves the waiting and building states.
async fn finished(b: &Builds, t: &str, id: &str) -> serde_json::Value {
    loop {
        let st = b.status(t, id, 0, &op()).unwrap();
        if st["status"] != "building" && st["status"] != "waiting" {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_build_starts_once_and_fails_on_a_missing_parent() {
    let h = Harness::new(2);
    let b = builds(&h);
    let build = b.request("app", None, None, None).unwrap();
    let mut s = spec(serde_json::json!([{"type": "RUN", "args": ["true"]}]));
    s.from_template = Some("nosuch".into());
    b.start(&build.template_id, &build.build_id, s.clone(), &op())
        .unwrap();
    let err = b
        .start(&build.template_id, &build.build_id, s, &op())
        .unwrap_err();
    assert_eq!(status(&err), 409);
    assert_eq!(
        err.to_string(),
        format!("build '{}' was started already", build.build_id)
    );
    let st = finished(&b, &build.template_id, &build.build_id).await;
    assert_eq!(st["status"], "error");
    assert_eq!(st["reason"]["step"], "base");
    assert_eq!(st["reason"]["message"], "template 'nosuch' not found");
    // No build waits for files any more.
    let err = b.file_status(&build.template_id, "ab", &op()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "template '{}' has no build waiting for files",
            build.template_id
        )
    );
}

#[tokio::test]
async fn a_build_from_itself_is_refused() {
    let h = Harness::new(2);
    let b = builds(&h);
    let t = h.add_custom(h.custom_template("app"));
    let build = b.request("app", None, None, None).unwrap();
    assert_eq!(build.template_id, t.id);
    let mut s = spec(serde_json::json!([]));
    s.from_template = Some("app".into());
    b.start(&build.template_id, &build.build_id, s, &op())
        .unwrap();
    let st = finished(&b, &build.template_id, &build.build_id).await;
    assert_eq!(
        st["reason"]["message"],
        "a template cannot be built from itself"
    );
}

#[tokio::test]
async fn the_status_of_a_waiting_build() {
    let h = Harness::new(2);
    let b = builds(&h);
    let build = b.request("app", None, None, None).unwrap();
    let st = b
        .status(&build.template_id, &build.build_id, 0, &op())
        .unwrap();
    assert_eq!(st["status"], "waiting");
    assert_eq!(st["templateID"], build.template_id.as_str());
    assert_eq!(st["buildID"], build.build_id.as_str());
    assert_eq!(st["logs"], serde_json::json!([]));
    assert!(st.get("reason").is_none());
}

#[tokio::test]
async fn deleting_templates() {
    let h = Harness::new(2);
    let b = builds(&h);
    let err = b.delete("base", &op()).unwrap_err();
    assert_eq!(status(&err), 400);
    assert_eq!(
        err.to_string(),
        "'base' is a built-in template and cannot be deleted"
    );
    let err = b.delete("nosuch", &op()).unwrap_err();
    assert_eq!(
        (status(&err), err.to_string()),
        (404, "template 'nosuch' not found".into())
    );
    let t = h.add_custom(h.custom_template("app"));
    h.store.put_template(&t).unwrap();
    b.delete("app", &op()).unwrap();
    assert!(h.templates.custom("app", &op()).is_none());
    assert!(h.store.templates().unwrap().is_empty());
    // Its layer, used by nothing now, is swept.
    assert!(!t.layers[0].exists());
}

#[tokio::test]
async fn sweeping_keeps_layers_in_use() {
    let h = Harness::new(2);
    let b = builds(&h);
    let layers = h.dir.0.join("templates/layers");
    let used = layers.join("t1/b1");
    let unused = layers.join("t2/b2");
    std::fs::create_dir_all(&used).unwrap();
    std::fs::create_dir_all(&unused).unwrap();
    let mut t = h.custom_template("app");
    t.layers = vec![used.clone()];
    h.add_custom(t);
    b.sweep();
    assert!(used.is_dir());
    assert!(!unused.exists());
    assert!(
        !layers.join("t2").exists(),
        "an emptied template dir goes too"
    );
}

#[tokio::test]
async fn load_registers_stored_templates() {
    let h = Harness::new(2);
    let t = h.custom_template("stored");
    std::fs::create_dir_all(&t.layers[0]).unwrap();
    h.store.put_template(&t).unwrap();
    builds(&h).load().unwrap();
    assert_eq!(h.templates.custom("stored", &op()).unwrap().id, t.id);
}

#[tokio::test]
async fn a_builds_log_is_bounded_and_keeps_its_errors() {
    let h = Harness::new(2);
    let b = builds(&h);
    let build = b.request("noisy", None, None, None).unwrap();
    for i in 0..MAX_LOG_ENTRIES + 500 {
        build.log("info", Some("run"), format!("line {i}"));
    }
    build.fail("run", "the step failed".to_owned());
    let s = lock(&build.state);
    assert_eq!(s.logs.len(), MAX_LOG_ENTRIES + 2);
    let marker = &s.logs[MAX_LOG_ENTRIES];
    assert!(marker.message.contains("is not kept"), "{}", marker.message);
    assert_eq!(
        s.logs.last().map(|e| e.message.as_str()),
        Some("the step failed")
    );
    drop(s);

    // Bytes are bounded too: a few huge lines fill it long before the entry limit.
    let build = b.request("wide", None, None, None).unwrap();
    for _ in 0..200 {
        build.log("info", Some("run"), "x".repeat(64 << 10));
    }
    let s = lock(&build.state);
    assert!(
        s.log_bytes <= MAX_LOG_BYTES + 200,
        "{} bytes kept",
        s.log_bytes
    );
    assert!(s.truncated);
}

#[tokio::test]
async fn a_teams_builds_and_templates_are_invisible_to_other_teams() {
    use crate::service::fake::team_caller;
    let h = Harness::new(2);
    let b = builds(&h);
    let a = Scope::team("a");
    let other = Scope::team("b");
    let build = b
        .request("app", None, None, Some(team_caller("ka", None, "a")))
        .unwrap();
    // The same name in another team is another template.
    let theirs = b
        .request("app", None, None, Some(team_caller("kb", None, "b")))
        .unwrap();
    assert_ne!(build.template_id, theirs.template_id);
    let t = &build.template_id;
    let missing = format!("build '{}' of template '{t}' not found", build.build_id);
    let err = b.status(t, &build.build_id, 0, &other).unwrap_err();
    assert_eq!((status(&err), err.to_string()), (404, missing.clone()));
    let err = b
        .start(t, &build.build_id, spec(serde_json::json!([])), &other)
        .unwrap_err();
    assert_eq!((status(&err), err.to_string()), (404, missing));
    let err = b.file_status(t, "ab", &other).unwrap_err();
    assert_eq!(
        (status(&err), err.to_string()),
        (404, format!("template '{t}' not found"))
    );
    assert!(b.status(t, &build.build_id, 0, &a).is_ok());
    assert!(
        b.status(t, &build.build_id, 0, &op()).is_ok(),
        "admins see all"
    );

    let mut built = h.custom_template("lib");
    built.team = Some("a".into());
    let built = h.add_custom(built);
    assert!(h.templates.custom("lib", &other).is_none());
    assert!(h.templates.custom(&built.id, &other).is_none());
    assert!(h.templates.resolve("lib", &other).is_err());
    assert!(h.templates.resolve("lib", &a).is_ok());
    let err = b.delete("lib", &other).unwrap_err();
    assert_eq!(status(&err), 404);
    b.delete(&built.id, &a).unwrap();
}

#[tokio::test]
async fn an_upload_token_stores_only_what_its_build_asked_for_and_never_replaces() {
    use crate::service::fake::team_caller;
    let h = Harness::new(2);
    let b = builds(&h);
    let mine = b
        .request("app", None, None, Some(team_caller("ka", None, "a")))
        .unwrap();
    let theirs = b
        .request("app", None, None, Some(team_caller("kb", None, "b")))
        .unwrap();
    let body = |s: &'static str| axum::body::Body::from(s);
    // A hash the build never asked about is refused, as is another build's token.
    let err = b
        .upload(&mine.template_id, "ab", &mine.upload_token, body("x"))
        .await
        .unwrap_err();
    assert_eq!(status(&err), 401);
    b.file_status(&mine.template_id, "ab", &Scope::team("a"))
        .unwrap();
    let err = b
        .upload(&mine.template_id, "ab", &theirs.upload_token, body("evil"))
        .await
        .unwrap_err();
    assert_eq!(status(&err), 401);
    b.upload(&mine.template_id, "ab", &mine.upload_token, body("first"))
        .await
        .unwrap();
    b.upload(&mine.template_id, "ab", &mine.upload_token, body("second"))
        .await
        .unwrap();
    let files = h.dir.0.join("templates/files");
    assert_eq!(
        std::fs::read_to_string(files.join("a/ab")).unwrap(),
        "first"
    );
    // The other team's build does not see team a's archive: it uploads its own.
    let (present, _) = b
        .file_status(&theirs.template_id, "ab", &Scope::team("b"))
        .unwrap();
    assert!(!present);
    b.upload(&theirs.template_id, "ab", &theirs.upload_token, body("b's"))
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(files.join("b/ab")).unwrap(), "b's");
    assert_eq!(
        std::fs::read_to_string(files.join("a/ab")).unwrap(),
        "first"
    );
}

#[tokio::test]
async fn a_teams_limits_cap_what_its_templates_ask_for() {
    use crate::service::fake::team_caller;
    let h = Harness::new(2);
    let b = builds(&h);
    let mut small = team_caller("k", None, "small");
    small.team.max_cpu = Some(2);
    small.team.max_memory_mb = Some(2048);
    let err = b
        .request("app", Some(4), None, Some(small.clone()))
        .unwrap_err();
    assert_eq!(
        (status(&err), err.to_string()),
        (
            400,
            "cpuCount 4 is out of range: this server allows 1 to 2 CPUs for your team's templates"
                .into()
        )
    );
    let err = b
        .request("app", None, Some(4096), Some(small.clone()))
        .unwrap_err();
    assert_eq!(status(&err), 400);
    assert!(b.request("app", Some(2), Some(2048), Some(small)).is_ok());
}

#[tokio::test]
async fn old_archives_join_the_default_team_and_unused_ones_are_swept() {
    let h = Harness::new(2);
    let b = builds(&h);
    let files = h.dir.0.join("templates/files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("ab"), "old").unwrap();
    b.load().unwrap();
    assert_eq!(
        std::fs::read_to_string(files.join("default/ab")).unwrap(),
        "old"
    );
    let stale = std::time::SystemTime::now() - upload::FILES_KEPT - Duration::from_secs(60);
    std::fs::File::options()
        .append(true)
        .open(files.join("default/ab"))
        .unwrap()
        .set_modified(stale)
        .unwrap();
    std::fs::write(files.join("default/cd"), "fresh").unwrap();
    b.sweep_files();
    assert!(!files.join("default/ab").exists());
    assert!(files.join("default/cd").exists());
}

#[tokio::test]
async fn a_snapshot_freezes_the_sandbox_for_the_copy_and_becomes_a_template() {
    use crate::service::fake::{req, Call};
    let h = Harness::new(4);
    let b = builds(&h);
    let rec = h.svc.create(req("base")).await.unwrap();
    let t = b.snapshot(&rec.id, Some("snap:v2"), None).await.unwrap();
    assert_eq!(t.name, "snap");
    assert_eq!(t.source_sandbox.as_deref(), Some(rec.id.as_str()));
    assert_eq!(t.layers[1..], rec.layers[..]);
    let calls = h.rt.calls();
    let at = |c: &Call| calls.iter().position(|x| x == c).unwrap();
    let pause = at(&Call::Pause(rec.id.clone()));
    let commit = at(&Call::Commit {
        id: rec.id.clone(),
        dest: t.layers[0].clone(),
    });
    let resume = at(&Call::Resume(rec.id.clone()));
    assert!(pause < commit && commit < resume, "{calls:?}");
    // The same name again: a new build of the same template.
    let again = b.snapshot(&rec.id, Some("snap"), None).await.unwrap();
    assert_eq!((again.id.as_str(), again.build_count), (t.id.as_str(), 2));
    assert_ne!(again.layers[0], t.layers[0]);
    assert_eq!(b.snapshots(&op(), Some(&rec.id), None).len(), 1);
    assert_eq!(
        b.snapshots(&op(), None, Some("default/snap:default")).len(),
        1
    );
    assert!(b.snapshots(&op(), Some("other"), None).is_empty());
    // It starts sandboxes by its full name.
    std::fs::create_dir_all(&again.layers[0]).unwrap();
    let from = h.svc.create(req("default/snap:default")).await.unwrap();
    assert_eq!(from.layers, again.layers);
}

#[tokio::test]
async fn a_paused_sandbox_is_copied_without_being_thawed() {
    use crate::service::fake::{req, Call};
    let h = Harness::new(4);
    let b = builds(&h);
    let rec = h.svc.create(req("base")).await.unwrap();
    h.svc.pause(&rec.id).await.unwrap();
    b.snapshot(&rec.id, None, None).await.unwrap();
    assert!(!h.rt.calls().contains(&Call::Resume(rec.id.clone())));
    assert_eq!(
        h.svc.get(&rec.id).unwrap().state,
        crate::sandbox::SandboxState::Paused
    );
}

#[tokio::test]
async fn snapshot_names_and_fork_counts_are_checked() {
    use crate::service::fake::req;
    let h = Harness::new(4);
    let b = builds(&h);
    let rec = h.svc.create(req("base")).await.unwrap();
    for (name, msg) in [
        ("Bad", "invalid template name"),
        ("code-interpreter-v1", "built-in template"),
    ] {
        let e = b.snapshot(&rec.id, Some(name), None).await.unwrap_err();
        assert_eq!(status(&e), 400);
        assert!(e.to_string().contains(msg), "{e}");
    }
    for count in [0, -3, 101] {
        let e = b.fork(&rec.id, Some(count), None, None).await.unwrap_err();
        assert_eq!(status(&e), 400);
        assert!(e.to_string().contains("out of range"), "{e}");
    }
    let e = b.fork("nosuch", Some(1), None, None).await.unwrap_err();
    assert_eq!(status(&e), 404);
    assert!(b.snapshots(&op(), None, None).is_empty());
}

#[tokio::test]
async fn forks_start_on_the_copied_layer_and_fail_one_by_one() {
    use crate::service::fake::req;
    let h = Harness::new(3);
    let b = builds(&h);
    let mut r = req("base");
    r.metadata.insert("k".into(), "v".into());
    let rec = h.svc.create(r).await.unwrap();
    // Two forks more than there are free slots.
    let free = crate::runtime::SandboxRuntime::slots(&*h.rt) - 1;
    let results = b
        .fork(&rec.id, Some(i64::from(free) + 2), Some(30), None)
        .await
        .unwrap();
    let started: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(started.len() as u32, free);
    for f in &started {
        assert_eq!(f.template_id, rec.template_id);
        assert_eq!(f.metadata, rec.metadata);
        assert_eq!(f.layers[1..], rec.layers[..]);
        assert!(f.layers[0].starts_with(b.layers_dir().join("forks")));
    }
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(status(e), 503, "{e}");
    }
    // A fork's layer is kept while a fork uses it.
    std::fs::create_dir_all(&started[0].layers[0]).unwrap();
    b.sweep();
    assert!(started[0].layers[0].is_dir());
    for f in &started {
        h.svc.kill(&f.id).await.unwrap();
    }
    b.sweep();
    assert!(!started[0].layers[0].exists());
}
