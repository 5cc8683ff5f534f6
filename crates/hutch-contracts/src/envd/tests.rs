//! The JSON and binary forms of the messages, pinned: clients built from E2B's own definitions
//! parse exactly these.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message as _;
use serde_json::{json, Value};

use super::filesystem::{self, EntryInfo, EventType, FileType, FilesystemEvent};
use super::from_json;
use super::google::protobuf::Timestamp;
use super::process::{self, process_event, process_input, process_selector, ProcessEvent};

fn start_response(event: process_event::Event) -> process::StartResponse {
    process::StartResponse {
        event: Some(ProcessEvent { event: Some(event) }),
    }
}

fn to_value<T: serde::Serialize>(message: &T) -> Value {
    serde_json::to_value(message).unwrap()
}

#[test]
fn process_events_in_json_keep_default_values() {
    let end = start_response(process_event::Event::End(process_event::EndEvent {
        exit_code: 0,
        exited: true,
        status: "exit status 0".into(),
        error: None,
    }));
    assert_eq!(
        to_value(&end),
        json!({"event": {"end": {"exitCode": 0, "exited": true, "status": "exit status 0"}}})
    );
    let data = start_response(process_event::Event::Data(process_event::DataEvent {
        output: Some(process_event::data_event::Output::Stdout(
            Bytes::from_static(b"hi\n"),
        )),
    }));
    assert_eq!(
        to_value(&data),
        json!({"event": {"data": {"stdout": "aGkK"}}})
    );
    let keepalive = start_response(process_event::Event::Keepalive(process_event::KeepAlive {}));
    assert_eq!(to_value(&keepalive), json!({"event": {"keepalive": {}}}));
    let list = process::ListResponse::default();
    assert_eq!(to_value(&list), json!({"processes": []}));
}

#[test]
fn filesystem_messages_in_json_omit_defaults_and_quote_int64() {
    let entry = EntryInfo {
        name: "a".into(),
        r#type: FileType::File as i32,
        path: "/a".into(),
        size: 4,
        mode: 0o644,
        permissions: "-rw-r--r--".into(),
        owner: "user".into(),
        group: "user".into(),
        modified_time: Some(Timestamp {
            seconds: 0,
            nanos: 0,
        }),
        symlink_target: None,
        metadata: BTreeMap::from([("k".into(), "v".into())]),
        is_symlink: false,
    };
    assert_eq!(
        to_value(&entry),
        json!({"name": "a", "type": "FILE_TYPE_FILE", "path": "/a", "size": "4", "mode": 420,
               "permissions": "-rw-r--r--", "owner": "user", "group": "user",
               "modifiedTime": "1970-01-01T00:00:00Z", "metadata": {"k": "v"}})
    );
    let link = EntryInfo {
        symlink_target: Some("/t".into()),
        is_symlink: true,
        ..EntryInfo::default()
    };
    assert_eq!(
        to_value(&link),
        json!({"symlinkTarget": "/t", "isSymlink": true})
    );
    let event = FilesystemEvent {
        name: "x".into(),
        r#type: EventType::Write as i32,
        entry: None,
    };
    assert_eq!(
        to_value(&event),
        json!({"name": "x", "type": "EVENT_TYPE_WRITE"})
    );
    assert_eq!(to_value(&filesystem::ListDirResponse::default()), json!({}));
}

#[test]
fn requests_in_json_accept_nulls_strings_enum_names_and_unknown_fields() {
    let req: process::StartRequest = from_json(
        br#"{"process": {"cmd": "/bin/true", "args": null, "envs": null, "cwd": null},
             "stdin": null, "unknownField": 1}"#,
    )
    .unwrap();
    let config = req.process.unwrap();
    assert_eq!(config.cmd, "/bin/true");
    assert!(config.args.is_empty() && config.envs.is_empty() && config.cwd.is_none());
    assert_eq!(req.stdin, None);

    let sig: process::SendSignalRequest =
        from_json(br#"{"process": {"pid": "12"}, "signal": "SIGNAL_SIGKILL"}"#).unwrap();
    assert_eq!(
        sig.process.clone().unwrap().selector,
        Some(process_selector::Selector::Pid(12))
    );
    assert_eq!(sig.signal(), process::Signal::Sigkill);
    let sig: process::SendSignalRequest = from_json(br#"{"signal": 15}"#).unwrap();
    assert_eq!(sig.signal(), process::Signal::Sigterm);
    assert!(from_json::<process::SendSignalRequest>(br#"{"signal": "SIGHUP"}"#).is_err());

    let watch: filesystem::WatchDirRequest =
        from_json(br#"{"path": "/x", "include_entry": true, "allowNetworkMounts": null}"#).unwrap();
    assert!(watch.include_entry && !watch.allow_network_mounts);
}

#[test]
fn bytes_in_json_accept_both_base64_alphabets_and_reject_garbage() {
    let input: process::SendInputRequest = from_json(br#"{"input": {"pty": "-_8"}}"#).unwrap();
    assert_eq!(
        input.input.unwrap().input,
        Some(process_input::Input::Pty(Bytes::from_static(&[0xfb, 0xff])))
    );
    assert!(from_json::<process::SendInputRequest>(br#"{"input": {"stdin": "%%"}}"#).is_err());
    assert!(from_json::<process::SendInputRequest>(
        br#"{"input": {"stdin": "aGk=", "pty": "aGk="}}"#
    )
    .is_err());
}

#[test]
fn binary_form_matches_known_bytes() {
    // EndEvent: exit_code is sint32, so -1 zigzags to 1; oneof members are written even empty.
    let end = start_response(process_event::Event::End(process_event::EndEvent {
        exit_code: -1,
        exited: false,
        status: "x".into(),
        error: None,
    }));
    assert_eq!(
        end.encode_to_vec(),
        [0x0a, 0x07, 0x1a, 0x05, 0x08, 0x01, 0x1a, 0x01, b'x']
    );
    let start = filesystem::WatchDirResponse {
        event: Some(filesystem::watch_dir_response::Event::Start(
            filesystem::watch_dir_response::StartEvent {},
        )),
    };
    assert_eq!(start.encode_to_vec(), [0x0a, 0x00]);
    let event = filesystem::WatchDirResponse {
        event: Some(filesystem::watch_dir_response::Event::Filesystem(
            FilesystemEvent {
                name: "x".into(),
                r#type: EventType::Write as i32,
                entry: None,
            },
        )),
    };
    assert_eq!(event.encode_to_vec(), [0x12, 5, 0x0a, 1, b'x', 0x10, 2]);
    // `optional bool stdin = 4` set to false is present on the wire.
    let req = process::StartRequest::decode(&[0x0a, 0x02, 0x0a, 0x00, 0x20, 0x00][..]).unwrap();
    assert_eq!(req.stdin, Some(false));
    assert_eq!(req.process.unwrap().cmd, "");
}

#[test]
fn timestamps_format_and_parse_as_rfc3339() {
    let ts = |seconds, nanos| Timestamp { seconds, nanos }.to_rfc3339();
    assert_eq!(ts(0, 0), "1970-01-01T00:00:00Z");
    assert_eq!(ts(951_782_400, 5_000_000), "2000-02-29T00:00:00.005Z");
    assert_eq!(
        ts(1_700_000_000, 123_456_000),
        "2023-11-14T22:13:20.123456Z"
    );
    assert_eq!(ts(1_700_000_000, 1), "2023-11-14T22:13:20.000000001Z");
    assert_eq!(ts(-1, 0), "1969-12-31T23:59:59Z");
    assert_eq!(ts(i64::MAX, 0), "9999-12-31T23:59:59Z");
    assert_eq!(ts(i64::MIN, 0), "0001-01-01T00:00:00Z");
    for (seconds, nanos) in [
        (0, 0),
        (951_782_400, 5_000_000),
        (1_700_000_000, 1),
        (-1, 0),
    ] {
        let parsed = Timestamp::parse_rfc3339(&ts(seconds, nanos)).unwrap();
        assert_eq!((parsed.seconds, parsed.nanos), (seconds, nanos));
    }
    let offset = Timestamp::parse_rfc3339("1970-01-01T01:00:00+01:00").unwrap();
    assert_eq!(offset.seconds, 0);
    assert!(Timestamp::parse_rfc3339("yesterday").is_err());
}
