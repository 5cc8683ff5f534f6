//! The filesystem service end to end: the real agent binary, driven over HTTP the way the E2B
//! SDK drives envd (JSON codec), plus one binary-protobuf call.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};

const CONFIG: &str = r#"{"sandboxId":"test","envVars":{}}"#;

async fn call(agent: &Agent, method: &str, body: Value) -> (u16, Value) {
    call_as(agent, method, body, &[]).await
}

async fn call_as(
    agent: &Agent,
    method: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let (status, body) = agent
        .unary(&format!("/filesystem.Filesystem/{method}"), &body, headers)
        .await;
    (status.as_u16(), body)
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Gives `path` to the fixture user when the tests can (as root), like files a user made.
fn give_to_user(path: &Path) {
    if is_root() {
        std::os::unix::fs::lchown(path, Some(TEST_UID), Some(TEST_UID)).unwrap();
    }
}

fn names(entries: &Value) -> Vec<String> {
    entries
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn paths(entries: &Value) -> Vec<String> {
    entries
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["path"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The real (symlink-free) path, as the agent reports symlink targets.
fn real(path: &Path) -> String {
    std::fs::canonicalize(path).unwrap().display().to_string()
}

#[tokio::test]
async fn stat_describes_files_directories_and_symlinks() {
    let agent = Agent::start(CONFIG).await;
    let home = agent.home.clone();
    let file = home.join("test_file.txt");
    std::fs::write(&file, "test").unwrap();
    set_mode(&file, 0o644);
    give_to_user(&file);
    std::fs::create_dir(home.join("dir")).unwrap();
    set_mode(&home.join("dir"), 0o755);
    give_to_user(&home.join("dir"));
    std::os::unix::fs::symlink("test_file.txt", home.join("link")).unwrap();
    std::os::unix::fs::symlink("nowhere", home.join("dangling")).unwrap();

    let (status, body) = call(&agent, "Stat", json!({"path": "test_file.txt"})).await;
    assert_eq!(status, 200, "{body}");
    let e = &body["entry"];
    assert_eq!(e["name"], "test_file.txt");
    assert_eq!(e["type"], "FILE_TYPE_FILE");
    assert_eq!(e["path"], file.display().to_string());
    assert_eq!(e["size"], "4");
    assert_eq!(e["mode"], 0o644);
    assert_eq!(e["permissions"], "-rw-r--r--");
    if is_root() {
        assert_eq!(e["owner"], "user");
        assert_eq!(e["group"], "user");
    }
    let mtime = e["modifiedTime"].as_str().unwrap();
    assert!(mtime.ends_with('Z') && mtime.len() >= 20, "{mtime}");
    assert!(e.get("symlinkTarget").is_none() && e.get("isSymlink").is_none());

    let (status, body) = call(&agent, "Stat", json!({"path": "~/dir"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entry"]["type"], "FILE_TYPE_DIRECTORY");
    assert_eq!(body["entry"]["permissions"], "drwxr-xr-x");
    assert_eq!(body["entry"]["mode"], 0o755);

    // envd: the link's own lstat, the target's type and mode, the resolved target.
    let (status, body) = call(&agent, "Stat", json!({"path": "link"})).await;
    assert_eq!(status, 200, "{body}");
    let e = &body["entry"];
    assert_eq!(e["name"], "link");
    assert_eq!(e["type"], "FILE_TYPE_FILE");
    assert_eq!(e["isSymlink"], true);
    assert_eq!(e["symlinkTarget"], real(&file));
    assert_eq!(e["mode"], 0o644);
    assert_eq!(e["permissions"], "Lrwxrwxrwx");
    assert_eq!(e["size"], "13");

    let (status, body) = call(&agent, "Stat", json!({"path": "dangling"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["entry"].get("type").is_none(), "{body}");
    assert_eq!(body["entry"]["isSymlink"], true);
    assert_eq!(
        body["entry"]["symlinkTarget"],
        home.join("dangling").display().to_string()
    );

    let (status, body) = call(&agent, "Stat", json!({"path": "/no/such/file"})).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no such file or directory"),
        "{body}"
    );
}

#[tokio::test]
async fn stat_reports_e2b_xattrs_as_metadata() {
    let agent = Agent::start(CONFIG).await;
    let file = agent.home.join("meta.txt");
    std::fs::write(&file, "x").unwrap();
    let set = |name: &str, value: &str| {
        let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
        let name = std::ffi::CString::new(name).unwrap();
        // SAFETY: valid C strings and a buffer of the given length.
        unsafe {
            libc::setxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        }
    };
    if set("user.e2b.owner", "alice") != 0 {
        eprintln!("skipping: the test directory's filesystem has no user xattrs");
        return;
    }
    assert_eq!(set("user.other", "ignored"), 0);
    let (status, body) = call(&agent, "Stat", json!({"path": "meta.txt"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entry"]["metadata"], json!({"owner": "alice"}));
}

#[tokio::test]
async fn make_dir_creates_parents_for_the_caller_and_reports_existing_ones() {
    let agent = Agent::start(CONFIG).await;
    let (status, body) = call(&agent, "MakeDir", json!({"path": "a/b/c"})).await;
    assert_eq!(status, 200, "{body}");
    let c = agent.home.join("a/b/c");
    assert_eq!(body["entry"]["path"], c.display().to_string());
    assert_eq!(body["entry"]["type"], "FILE_TYPE_DIRECTORY");
    assert_eq!(body["entry"]["permissions"], "drwxr-xr-x");
    for dir in ["a", "a/b", "a/b/c"] {
        let meta = std::fs::metadata(agent.home.join(dir)).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o755, "{dir}");
        if is_root() {
            assert_eq!((meta.uid(), meta.gid()), (TEST_UID, TEST_UID), "{dir}");
        }
    }

    let (status, body) = call(&agent, "MakeDir", json!({"path": "~/a/b/c"})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "already_exists");

    std::fs::write(agent.home.join("file"), "").unwrap();
    let (status, body) = call(&agent, "MakeDir", json!({"path": "file"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_argument");

    if is_root() {
        // As root: owned by root.
        let target = agent.dir.join("rootdir/x");
        let auth = basic("root");
        let (status, body) = call_as(
            &agent,
            "MakeDir",
            json!({"path": target.display().to_string()}),
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["entry"]["owner"], "root");
        assert_eq!(std::fs::metadata(&target).unwrap().uid(), 0);
    }
}

fn make_tree(base: &Path) {
    for dir in [
        "subdir1/subdir1_1",
        "subdir1/subdir1_2",
        "subdir2/subdir2_1",
        "subdir2/subdir2_2",
    ] {
        std::fs::create_dir_all(base.join(dir)).unwrap();
    }
    std::fs::write(base.join("file1.txt"), "Hello, world!").unwrap();
    std::fs::write(base.join("subdir1/subdir1_1/deep.txt"), "").unwrap();
    std::os::unix::fs::symlink("subdir1", base.join("link")).unwrap();
}

#[tokio::test]
async fn list_dir_walks_to_the_depth_in_name_order_without_following_symlinks() {
    let agent = Agent::start(CONFIG).await;
    let base = agent.home.join("tree");
    make_tree(&base);

    let (status, body) = call(&agent, "ListDir", json!({"path": "tree"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        names(&body["entries"]),
        ["file1.txt", "link", "subdir1", "subdir2"]
    );
    let link = &body["entries"][1];
    assert_eq!(link["type"], "FILE_TYPE_DIRECTORY");
    assert_eq!(link["isSymlink"], true);

    let (status, body) = call(&agent, "ListDir", json!({"path": "tree", "depth": 2})).await;
    assert_eq!(status, 200, "{body}");
    let b = base.display().to_string();
    assert_eq!(
        paths(&body["entries"]),
        [
            format!("{b}/file1.txt"),
            format!("{b}/link"),
            format!("{b}/subdir1"),
            format!("{b}/subdir1/subdir1_1"),
            format!("{b}/subdir1/subdir1_2"),
            format!("{b}/subdir2"),
            format!("{b}/subdir2/subdir2_1"),
            format!("{b}/subdir2/subdir2_2"),
        ]
    );
    let (_, deeper) = call(&agent, "ListDir", json!({"path": "tree", "depth": 3})).await;
    assert_eq!(deeper["entries"].as_array().unwrap().len(), 9);

    // Listed through a symlink: paths stay under the name the caller used.
    std::os::unix::fs::symlink(&base, agent.home.join("alias")).unwrap();
    let (status, body) = call(&agent, "ListDir", json!({"path": "~/alias", "depth": 0})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["entries"][0]["path"],
        agent.home.join("alias/file1.txt").display().to_string()
    );

    let (status, body) = call(&agent, "ListDir", json!({"path": "tree/file1.txt"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    let (status, body) = call(&agent, "ListDir", json!({"path": "missing"})).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    std::fs::create_dir(agent.home.join("empty")).unwrap();
    let (status, body) = call(&agent, "ListDir", json!({"path": "empty"})).await;
    assert_eq!(status, 200);
    assert!(names(&body["entries"]).is_empty());
}

#[tokio::test]
async fn move_renames_and_creates_missing_destination_parents() {
    let agent = Agent::start(CONFIG).await;
    std::fs::write(agent.home.join("old.txt"), "content").unwrap();
    let (status, body) = call(
        &agent,
        "Move",
        json!({"source": "old.txt", "destination": "x/y/new.txt"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let new = agent.home.join("x/y/new.txt");
    assert_eq!(body["entry"]["path"], new.display().to_string());
    assert_eq!(body["entry"]["name"], "new.txt");
    assert_eq!(std::fs::read_to_string(&new).unwrap(), "content");
    assert!(!agent.home.join("old.txt").exists());
    if is_root() {
        assert_eq!(
            std::fs::metadata(agent.home.join("x")).unwrap().uid(),
            TEST_UID
        );
        // The moved file keeps its owner.
        assert_eq!(body["entry"]["owner"], "root");
    }

    let (status, body) = call(
        &agent,
        "Move",
        json!({"source": "nothing.txt", "destination": "z/new.txt"}),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert!(!agent.home.join("z").exists());
}

#[tokio::test]
async fn remove_deletes_files_links_and_trees_and_ignores_missing_paths() {
    let agent = Agent::start(CONFIG).await;
    let base = agent.home.join("tree");
    make_tree(&base);
    std::os::unix::fs::symlink(&base, agent.home.join("alias")).unwrap();

    let (status, _) = call(&agent, "Remove", json!({"path": "alias"})).await;
    assert_eq!(status, 200);
    assert!(base.join("file1.txt").exists(), "the link's target stays");
    assert!(std::fs::symlink_metadata(agent.home.join("alias")).is_err());

    let (status, _) = call(&agent, "Remove", json!({"path": "tree/file1.txt"})).await;
    assert_eq!(status, 200);
    assert!(!base.join("file1.txt").exists());

    let (status, _) = call(&agent, "Remove", json!({"path": "tree"})).await;
    assert_eq!(status, 200);
    assert!(!base.exists());

    // envd's os.RemoveAll: nothing there is fine (the SDK's own tests rely on it).
    let (status, body) = call(&agent, "Remove", json!({"path": "tree"})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn unknown_users_methods_and_bad_paths_get_connect_errors() {
    let agent = Agent::start(CONFIG).await;
    let auth = basic("mallory");
    let (status, body) = call_as(
        &agent,
        "Stat",
        json!({"path": "/"}),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    assert_eq!(body["message"], "invalid username: 'mallory'");

    let (status, body) = call(&agent, "Frobnicate", json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (501, Some("unimplemented"))
    );

    let (status, body) = call(&agent, "Stat", json!({"path": "~root/x"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
}

#[tokio::test]
async fn stat_speaks_binary_protobuf() {
    use hutch_contracts::envd::filesystem::{FileType, StatResponse};
    use prost::Message as _;
    let agent = Agent::start(CONFIG).await;
    std::fs::write(agent.home.join("p.txt"), "abc").unwrap();
    // StatRequest { path (1) = "p.txt" }, written out by hand.
    let (resp, _conn) = agent
        .post_raw(
            "/filesystem.Filesystem/Stat",
            "application/proto",
            &[],
            b"\x0a\x05p.txt".to_vec(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/proto");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let entry = StatResponse::decode(body).unwrap().entry.unwrap();
    assert_eq!(entry.name, "p.txt");
    assert_eq!(entry.r#type(), FileType::File);
    assert_eq!(entry.size, 3);
    assert!(entry.modified_time.is_some());
}

// ---- watching ----

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
