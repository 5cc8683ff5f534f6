//! The filesystem service end to end: the real agent binary, driven over HTTP the way the E2B
//! SDK drives envd (JSON codec), plus one binary-protobuf call. Watching is in
//! `filesystem_watch.rs`.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::filesystem::*;
use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};

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
        rustix::fs::setxattr(
            &file,
            name,
            value.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
    };
    if set("user.e2b.owner", "alice").is_err() {
        eprintln!("skipping: the test directory's filesystem has no user xattrs");
        return;
    }
    assert_eq!(set("user.other", "ignored"), Ok(()));
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
    // The tree is the sandbox user's, as what it works on in its home is: requests act
    // with that user's permissions.
    give_tree_to_user(base);
}

fn give_tree_to_user(path: &Path) {
    give_to_user(path);
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            give_tree_to_user(&entry.unwrap().path());
        }
    }
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
