//! Builds over the fake runtime: requests, uploads, starting, status, deletion, sweeping.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::service::fake::{status, Harness};

fn builds(h: &Harness) -> Arc<Builds> {
    Builds::new(Arc::clone(&h.svc))
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
        ("ok", Some(65), None, "cpuCount 65 is out of range 1..=64"),
        (
            "ok",
            None,
            Some(64),
            "memoryMB 64 is out of range 128..=262144",
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
    let err = b.file_status("t", "../x").unwrap_err();
    assert_eq!(
        (status(&err), err.to_string()),
        (400, "invalid files hash \"../x\"".into())
    );
    let err = b.file_status("t", "ab").unwrap_err();
    assert_eq!(
        (status(&err), err.to_string()),
        (404, "template 't' not found".into())
    );
    let build = b.request("app", None, None, None).unwrap();
    let (present, token) = b.file_status(&build.template_id, "ab").unwrap();
    assert!(!present);
    assert_eq!(token, build.upload_token);
}

#[tokio::test]
async fn uploads_need_the_builds_token() {
    let h = Harness::new(2);
    let b = builds(&h);
    let build = b.request("app", None, None, None).unwrap();
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
    let (present, _) = b.file_status(&build.template_id, "ab").unwrap();
    assert!(present);
    let stored = std::fs::read_to_string(h.dir.0.join("templates/files/ab")).unwrap();
    assert_eq!(stored, "archive");
}

#[tokio::test]
async fn starting_checks_the_build_and_its_steps() {
    let h = Harness::new(2);
    let b = builds(&h);
    let err = b.start("t", "nope", BuildSpec::default()).unwrap_err();
    assert_eq!(status(&err), 404);
    assert_eq!(err.to_string(), "build 'nope' of template 't' not found");
    let build = b.request("app", None, None, None).unwrap();
    let err = b
        .start(
            &build.template_id,
            &build.build_id,
            spec(serde_json::json!([{"type": "COPY", "args": ["a", "b"], "filesHash": "ff"}])),
        )
        .unwrap_err();
    assert_eq!(status(&err), 400);
    assert_eq!(
        err.to_string(),
        "step 1 (COPY a): its files (hash \"ff\") were not uploaded"
    );
    // A refused start leaves the build waiting for its files.
    assert!(b.file_status(&build.template_id, "ff").is_ok());
}

/// Waits until the build leaves the waiting and building states.
async fn finished(b: &Builds, t: &str, id: &str) -> serde_json::Value {
    loop {
        let st = b.status(t, id, 0).unwrap();
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
    b.start(&build.template_id, &build.build_id, s.clone())
        .unwrap();
    let err = b.start(&build.template_id, &build.build_id, s).unwrap_err();
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
    let err = b.file_status(&build.template_id, "ab").unwrap_err();
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
    b.start(&build.template_id, &build.build_id, s).unwrap();
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
    let st = b.status(&build.template_id, &build.build_id, 0).unwrap();
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
    let err = b.delete("base").unwrap_err();
    assert_eq!(status(&err), 400);
    assert_eq!(
        err.to_string(),
        "'base' is a built-in template and cannot be deleted"
    );
    let err = b.delete("nosuch").unwrap_err();
    assert_eq!(
        (status(&err), err.to_string()),
        (404, "template 'nosuch' not found".into())
    );
    let t = h.add_custom(h.custom_template("app"));
    h.store.put_template(&t).unwrap();
    b.delete("app").unwrap();
    assert!(h.templates.custom("app").is_none());
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
    assert_eq!(h.templates.custom("stored").unwrap().id, t.id);
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
