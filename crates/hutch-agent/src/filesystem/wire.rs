//! The filesystem service's messages: the generated `filesystem` package of
//! [`hutch_contracts::envd`], and the few facts about them the agent adds.

use hutch_contracts::envd::filesystem::watch_dir_response::{Event, KeepAlive, StartEvent};

pub use hutch_contracts::envd::filesystem::{
    CreateWatcherRequest, CreateWatcherResponse, EntryInfo, EventType, FileType, FilesystemEvent,
    GetWatcherEventsRequest, GetWatcherEventsResponse, ListDirRequest, ListDirResponse,
    MakeDirRequest, MakeDirResponse, MoveRequest, MoveResponse, RemoveRequest, RemoveResponse,
    RemoveWatcherRequest, RemoveWatcherResponse, StatRequest, StatResponse, WatchDirRequest,
    WatchDirResponse,
};
pub use hutch_contracts::envd::google::protobuf::Timestamp;

/// Whether events of this type describe an entry that still exists at the path, and so may
/// carry its `EntryInfo` (envd never attaches one to remove or rename events: a stat could
/// describe a different file that took the name since).
pub fn carries_entry(event_type: EventType) -> bool {
    matches!(
        event_type,
        EventType::Create | EventType::Write | EventType::Chmod
    )
}

/// `CreateWatcher` asks for the same watch as `WatchDir`, with the same four fields.
pub fn watch_request(req: CreateWatcherRequest) -> WatchDirRequest {
    WatchDirRequest {
        path: req.path,
        recursive: req.recursive,
        include_entry: req.include_entry,
        allow_network_mounts: req.allow_network_mounts,
    }
}

/// The first message of a `WatchDir` stream: the watch is set up.
pub fn watch_started() -> WatchDirResponse {
    WatchDirResponse {
        event: Some(Event::Start(StartEvent {})),
    }
}

/// A `WatchDir` message sent after a quiet stretch so proxies keep the stream open.
pub fn watch_keepalive() -> WatchDirResponse {
    WatchDirResponse {
        event: Some(Event::Keepalive(KeepAlive {})),
    }
}

/// A `WatchDir` message carrying one change.
pub fn watch_event(event: FilesystemEvent) -> WatchDirResponse {
    WatchDirResponse {
        event: Some(Event::Filesystem(event)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::Codec;
    use serde_json::{json, Value};

    #[test]
    fn watch_messages_encode_in_both_codecs() {
        let start: Value =
            serde_json::from_slice(&Codec::Json.encode_message(&watch_started())).unwrap();
        assert_eq!(start, json!({"start": {}}));
        let event = watch_event(FilesystemEvent {
            name: "x".into(),
            r#type: EventType::Write as i32,
            entry: None,
        });
        let v: Value = serde_json::from_slice(&Codec::Json.encode_message(&event)).unwrap();
        assert_eq!(
            v,
            json!({"filesystem": {"name": "x", "type": "EVENT_TYPE_WRITE"}})
        );
        assert_eq!(Codec::Proto.encode_message(&watch_started()), [0x0a, 0]);
        assert_eq!(
            Codec::Proto.encode_message(&event),
            [0x12, 5, 0x0a, 1, b'x', 0x10, 2]
        );
    }
}
