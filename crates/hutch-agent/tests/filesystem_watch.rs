//! Watching directories through the filesystem service, end to end against the real agent
//! binary: streamed `WatchDir` events, recursive watches, polling watchers, keepalives and
//! deadlines, and the inotify descriptors they hold.

mod common;

use std::path::Path;
use std::time::Duration;

use common::filesystem::*;
use common::*;
use serde_json::{json, Value};

/// The next non-keepalive frame of a watch stream, within `secs`.
async fn next_watch_frame(stream: &mut RpcStream, secs: u64) -> Option<Frame> {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            let frame = stream.next().await?;
            if frame.json.get("keepalive").is_none() || frame.flags & 2 != 0 {
                return Some(frame);
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Reads filesystem events until `done` says the collected ones suffice; panics after 10 s.
async fn events_until(
    stream: &mut RpcStream,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut raw = Vec::new();
    while !done(&seen) {
        let frame = next_watch_frame(stream, 10)
            .await
            .unwrap_or_else(|| panic!("no further events; got {seen:?}"));
        assert_eq!(frame.flags & 2, 0, "stream ended: {frame:?} after {seen:?}");
        let ev = &frame.json["filesystem"];
        seen.push((
            ev["name"].as_str().unwrap().to_owned(),
            ev["type"].as_str().unwrap().to_owned(),
        ));
        raw.push(ev.clone());
    }
    raw
}

fn has(seen: &[(String, String)], name: &str, kind: &str) -> bool {
    seen.iter()
        .any(|(n, t)| n == name && t == &format!("EVENT_TYPE_{kind}"))
}

async fn open_watch(agent: &Agent, path: &Path, recursive: bool, include_entry: bool) -> RpcStream {
    let mut stream = agent
        .stream(
            "/filesystem.Filesystem/WatchDir",
            &json!({"path": path.display().to_string(), "recursive": recursive,
                    "includeEntry": include_entry}),
            &[("keepalive-ping-interval", "30")],
        )
        .await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.content_type, "application/connect+json");
    let first = next_watch_frame(&mut stream, 10).await.unwrap();
    assert_eq!(first.json, json!({"start": {}}), "{first:?}");
    stream
}

#[tokio::test]
async fn watch_dir_streams_create_write_chmod_rename_and_remove() {
    let agent = Agent::start(CONFIG).await;
    let dir = agent.home.join("watched");
    std::fs::create_dir(&dir).unwrap();
    let mut stream = open_watch(&agent, &dir, false, true).await;

    std::fs::write(dir.join("f.txt"), "hello").unwrap();
    let events = events_until(&mut stream, |s| {
        has(s, "f.txt", "CREATE") && has(s, "f.txt", "WRITE")
    })
    .await;
    let create = &events[0];
    assert_eq!(create["type"], "EVENT_TYPE_CREATE");
    assert_eq!(create["entry"]["name"], "f.txt");
    assert_eq!(
        create["entry"]["path"],
        dir.join("f.txt").display().to_string()
    );
    assert_eq!(create["entry"]["type"], "FILE_TYPE_FILE");

    set_mode(&dir.join("f.txt"), 0o600);
    events_until(&mut stream, |s| has(s, "f.txt", "CHMOD")).await;
    std::fs::rename(dir.join("f.txt"), dir.join("g.txt")).unwrap();
    let events = events_until(&mut stream, |s| {
        has(s, "f.txt", "RENAME") && has(s, "g.txt", "CREATE")
    })
    .await;
    let rename = events
        .iter()
        .find(|e| e["type"] == "EVENT_TYPE_RENAME")
        .unwrap();
    assert!(
        rename.get("entry").is_none(),
        "renames carry no entry: {rename}"
    );
    std::fs::remove_file(dir.join("g.txt")).unwrap();
    let events = events_until(&mut stream, |s| has(s, "g.txt", "REMOVE")).await;
    assert!(events.last().unwrap().get("entry").is_none());

    // Nested directories are not watched without `recursive`.
    std::fs::create_dir(dir.join("sub")).unwrap();
    events_until(&mut stream, |s| has(s, "sub", "CREATE")).await;
    std::fs::write(dir.join("sub/inner"), "x").unwrap();
    std::fs::write(dir.join("marker"), "x").unwrap();
    let events = events_until(&mut stream, |s| has(s, "marker", "CREATE")).await;
    assert!(
        events.iter().all(|e| e["name"] != "sub/inner"),
        "{events:?}"
    );
}

#[tokio::test]
async fn recursive_watch_covers_existing_and_new_subdirectories() {
    let agent = Agent::start(CONFIG).await;
    let dir = agent.home.join("rwatch");
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    let mut stream = open_watch(&agent, &dir, true, false).await;

    std::fs::write(dir.join("nested/test_watch.txt"), "data").unwrap();
    let events = events_until(&mut stream, |s| has(s, "nested/test_watch.txt", "WRITE")).await;
    assert_eq!(events[0]["name"], "nested/test_watch.txt");
    assert_eq!(events[0]["type"], "EVENT_TYPE_CREATE");
    assert!(events[0].get("entry").is_none());

    std::fs::create_dir(dir.join("later")).unwrap();
    events_until(&mut stream, |s| has(s, "later", "CREATE")).await;
    std::fs::write(dir.join("later/f"), "x").unwrap();
    events_until(&mut stream, |s| has(s, "later/f", "WRITE")).await;

    // `mkdir -p` finishes before the agent sees `a`; what is inside is reported as created.
    std::fs::create_dir_all(dir.join("a/b/c")).unwrap();
    events_until(&mut stream, |s| has(s, "a/b/c", "CREATE")).await;
    std::fs::write(dir.join("a/b/c/deep"), "x").unwrap();
    events_until(&mut stream, |s| has(s, "a/b/c/deep", "WRITE")).await;

    // A directory moved within the tree is watched under its new name.
    std::fs::rename(dir.join("a"), dir.join("moved")).unwrap();
    events_until(&mut stream, |s| {
        has(s, "a", "RENAME") && has(s, "moved", "CREATE")
    })
    .await;
    std::fs::write(dir.join("moved/b/c/again"), "x").unwrap();
    let events = events_until(&mut stream, |s| has(s, "moved/b/c/again", "WRITE")).await;
    assert!(events
        .iter()
        .all(|e| !e["name"].as_str().unwrap().starts_with("a/")));

    std::fs::remove_dir_all(dir.join("later")).unwrap();
    events_until(&mut stream, |s| has(s, "later", "REMOVE")).await;
}

#[tokio::test]
async fn watch_dir_rejects_missing_paths_and_files_in_the_stream() {
    let agent = Agent::start(CONFIG).await;
    std::fs::write(agent.home.join("plain"), "").unwrap();
    for (path, code) in [("nope", "not_found"), ("plain", "invalid_argument")] {
        let stream = agent
            .stream(
                "/filesystem.Filesystem/WatchDir",
                &json!({"path": path}),
                &[],
            )
            .await;
        assert_eq!(stream.status, 200);
        let frames = stream.collect(10).await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].flags, 2);
        assert_eq!(frames[0].json["error"]["code"], code, "{path}");
    }
    let (status, body) = call(&agent, "CreateWatcher", json!({"path": "nope"})).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = call(&agent, "CreateWatcher", json!({"path": "plain"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
}

#[tokio::test]
async fn watch_dir_sends_keepalives_and_honours_its_deadline() {
    let agent = Agent::start(CONFIG).await;
    let mut stream = agent
        .stream(
            "/filesystem.Filesystem/WatchDir",
            &json!({"path": "~"}),
            &[
                ("keepalive-ping-interval", "1"),
                ("connect-timeout-ms", "2500"),
            ],
        )
        .await;
    let first = stream.next().await.unwrap();
    assert_eq!(first.json, json!({"start": {}}));
    let second = tokio::time::timeout(Duration::from_secs(3), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.json, json!({"keepalive": {}}));
    let rest = stream.collect(10).await;
    let last = rest.last().unwrap();
    assert_eq!(last.flags, 2);
    assert_eq!(last.json["error"]["code"], "deadline_exceeded");
}

#[tokio::test]
async fn polling_watchers_buffer_events_until_fetched() {
    let agent = Agent::start(CONFIG).await;
    let dir = agent.home.join("polled");
    std::fs::create_dir(&dir).unwrap();
    let (status, body) = call(
        &agent,
        "CreateWatcher",
        json!({"path": "polled", "include_entry": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["watcherId"].as_str().unwrap().to_owned();
    assert!(id.starts_with('w'));

    std::fs::write(dir.join("a.txt"), "one").unwrap();
    let mut events = Vec::new();
    for _ in 0..100 {
        let (status, body) = call(&agent, "GetWatcherEvents", json!({"watcherId": id})).await;
        assert_eq!(status, 200, "{body}");
        events.extend(body["events"].as_array().cloned().unwrap_or_default());
        if events.iter().any(|e| e["type"] == "EVENT_TYPE_WRITE") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["EVENT_TYPE_CREATE", "EVENT_TYPE_WRITE"],
        "{events:?}"
    );
    assert_eq!(events[1]["entry"]["size"], "3");

    let (status, body) = call(&agent, "GetWatcherEvents", json!({"watcherId": id})).await;
    assert_eq!(status, 200);
    assert!(body.get("events").is_none(), "already fetched: {body}");

    let (status, _) = call(&agent, "RemoveWatcher", json!({"watcherId": id})).await;
    assert_eq!(status, 200);
    for method in ["GetWatcherEvents", "RemoveWatcher"] {
        let (status, body) = call(&agent, method, json!({"watcherId": id})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "{method}"
        );
    }
}

/// The agent's open inotify descriptors.
fn inotify_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .map(|t| t == Path::new("anon_inode:inotify"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

async fn wait_for_fds(pid: i32, want: usize) {
    for _ in 0..250 {
        if inotify_fds(pid) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "agent has {} inotify descriptors, want {want}",
        inotify_fds(pid)
    );
}

#[tokio::test]
async fn watchers_close_their_descriptors_when_removed_or_disconnected() {
    let agent = Agent::start(CONFIG).await;
    let pid = agent.pid();
    assert_eq!(inotify_fds(pid), 0);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, body) = call(
            &agent,
            "CreateWatcher",
            json!({"path": "~", "recursive": true}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["watcherId"].as_str().unwrap().to_owned());
    }
    let stream = open_watch(&agent, &agent.home, true, false).await;
    wait_for_fds(pid, 4).await;

    stream.disconnect();
    wait_for_fds(pid, 3).await;
    for id in &ids {
        let (status, _) = call(&agent, "RemoveWatcher", json!({"watcherId": id})).await;
        assert_eq!(status, 200);
    }
    wait_for_fds(pid, 0).await;

    // A stream that ended by itself (deadline) leaves nothing behind either.
    let stream = agent
        .stream(
            "/filesystem.Filesystem/WatchDir",
            &json!({"path": "~"}),
            &[("connect-timeout-ms", "300")],
        )
        .await;
    let frames = stream.collect(10).await;
    assert_eq!(
        frames.last().unwrap().json["error"]["code"],
        "deadline_exceeded"
    );
    wait_for_fds(pid, 0).await;
}
