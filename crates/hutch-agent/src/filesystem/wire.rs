//! The filesystem service's messages (`filesystem/filesystem.proto` of E2B's envd) in proto3
//! JSON and the protobuf binary format.
//!
//! Requests accept what a proto3 JSON parser must: both the lowerCamelCase and the original
//! field names, `null` for any field, numbers as strings, and unknown fields (ignored). Responses
//! follow connect-go's output: default values are omitted, `int64` is a decimal string, enums go
//! by name and timestamps are RFC 3339 in UTC.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};

use crate::connect::Codec;
use crate::json::{nullable, uint32};
use crate::proto::{FromProto, ProtoError, Reader, ToProto, Writer};

/// `FileType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileType {
    /// `FILE_TYPE_UNSPECIFIED` (0): sockets, fifos, devices, dangling symlinks.
    #[default]
    Unspecified,
    /// `FILE_TYPE_FILE` (1).
    File,
    /// `FILE_TYPE_DIRECTORY` (2).
    Directory,
    /// `FILE_TYPE_SYMLINK` (3); envd reports a symlink's target type instead, so this only
    /// appears for a link whose target is itself reported as a link (never, in practice).
    Symlink,
}

impl FileType {
    fn number(self) -> u64 {
        match self {
            FileType::Unspecified => 0,
            FileType::File => 1,
            FileType::Directory => 2,
            FileType::Symlink => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FileType::Unspecified => "FILE_TYPE_UNSPECIFIED",
            FileType::File => "FILE_TYPE_FILE",
            FileType::Directory => "FILE_TYPE_DIRECTORY",
            FileType::Symlink => "FILE_TYPE_SYMLINK",
        }
    }
}

impl Serialize for FileType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// `EventType`: what happened to a watched path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// `EVENT_TYPE_CREATE` (1): created, or moved into the watched tree.
    Create,
    /// `EVENT_TYPE_WRITE` (2): contents modified.
    Write,
    /// `EVENT_TYPE_REMOVE` (3): deleted.
    Remove,
    /// `EVENT_TYPE_RENAME` (4): moved away (the new name, if watched, gets a `Create`).
    Rename,
    /// `EVENT_TYPE_CHMOD` (5): metadata changed (mode, owner, times, xattrs).
    Chmod,
}

impl EventType {
    fn number(self) -> u64 {
        match self {
            EventType::Create => 1,
            EventType::Write => 2,
            EventType::Remove => 3,
            EventType::Rename => 4,
            EventType::Chmod => 5,
        }
    }

    fn name(self) -> &'static str {
        match self {
            EventType::Create => "EVENT_TYPE_CREATE",
            EventType::Write => "EVENT_TYPE_WRITE",
            EventType::Remove => "EVENT_TYPE_REMOVE",
            EventType::Rename => "EVENT_TYPE_RENAME",
            EventType::Chmod => "EVENT_TYPE_CHMOD",
        }
    }

    /// Whether events of this type describe an entry that still exists at the path, and so
    /// may carry its `EntryInfo` (envd never attaches one to remove or rename events: a stat
    /// could describe a different file that took the name since).
    pub fn carries_entry(self) -> bool {
        matches!(
            self,
            EventType::Create | EventType::Write | EventType::Chmod
        )
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// `google.protobuf.Timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Nanoseconds within the second, 0..1e9.
    pub nanos: i32,
}

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range proto3 JSON can express.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

impl Timestamp {
    /// RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, as proto3 JSON writes it. Times
    /// outside years 1..=9999 (possible with `touch -d`) are clamped so clients can parse them.
    pub fn to_rfc3339(self) -> String {
        let seconds = self.seconds.clamp(MIN_SECONDS, MAX_SECONDS);
        let days = seconds.div_euclid(86_400);
        let of_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let mut out = format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        );
        let nanos = self.nanos.clamp(0, 999_999_999);
        if nanos != 0 {
            if nanos % 1_000_000 == 0 {
                out.push_str(&format!(".{:03}", nanos / 1_000_000));
            } else if nanos % 1_000 == 0 {
                out.push_str(&format!(".{:06}", nanos / 1_000));
            } else {
                out.push_str(&format!(".{nanos:09}"));
            }
        }
        out.push('Z');
        out
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (the classic era-based
/// conversion: 400-year eras of 146097 days, years starting in March so leap days come last).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

/// `EntryInfo`: one filesystem entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryInfo {
    /// The last path component.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The entry's type; a symlink's target type.
    #[serde(rename = "type", skip_serializing_if = "is_unspecified")]
    pub file_type: FileType,
    /// The absolute path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// `st_size` of the entry itself (for a symlink: the length of its target string).
    #[serde(skip_serializing_if = "is_zero_i64", serialize_with = "int64")]
    pub size: i64,
    /// The permission bits (of the target, for a symlink).
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub mode: u32,
    /// Go's `os.FileMode.String()` of the entry itself, e.g. `-rw-r--r--`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub permissions: String,
    /// Owner's user name (or uid).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Group name (or gid).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Last modification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_time: Option<Timestamp>,
    /// For a symlink, its fully resolved target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    /// The `user.e2b.*` xattrs, prefix stripped.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Whether the entry itself is a symlink.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub is_symlink: bool,
}

fn is_unspecified(t: &FileType) -> bool {
    *t == FileType::Unspecified
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// proto3 JSON writes 64-bit integers as decimal strings (JavaScript numbers cannot hold them).
fn int64<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

impl EntryInfo {
    fn write(&self, w: &mut Writer) {
        w.non_empty(1, self.name.as_bytes())
            .varint(2, self.file_type.number())
            .non_empty(3, self.path.as_bytes())
            // int64 on the wire is the two's complement as a 64-bit varint.
            .varint(4, self.size as u64)
            .varint(5, u64::from(self.mode))
            .non_empty(6, self.permissions.as_bytes())
            .non_empty(7, self.owner.as_bytes())
            .non_empty(8, self.group.as_bytes());
        if let Some(ts) = self.modified_time {
            w.message(9, |t| {
                t.varint(1, ts.seconds as u64)
                    .varint(2, i64::from(ts.nanos) as u64);
            });
        }
        if let Some(target) = &self.symlink_target {
            // `optional`: present even when empty.
            w.bytes(10, target.as_bytes());
        }
        for (key, value) in &self.metadata {
            w.message(11, |e| {
                e.non_empty(1, key.as_bytes())
                    .non_empty(2, value.as_bytes());
            });
        }
        w.boolean(12, self.is_symlink);
    }
}

/// `FilesystemEvent`: one change under a watched directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilesystemEvent {
    /// The path relative to the watched directory (`.` for the directory itself).
    pub name: String,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The entry, when the watch asked for it and it still exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryInfo>,
}

impl FilesystemEvent {
    fn write(&self, w: &mut Writer) {
        w.non_empty(1, self.name.as_bytes())
            .varint(2, self.event_type.number());
        if let Some(entry) = &self.entry {
            w.message(3, |e| entry.write(e));
        }
    }
}

// ---- requests ----

/// `StatRequest`, `MakeDirRequest` and `RemoveRequest`: just a path.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PathRequest {
    /// Absolute, `~`-relative or home-relative path.
    #[serde(deserialize_with = "nullable")]
    pub path: String,
}

impl FromProto for PathRequest {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            if field == 1 {
                self.path = value.string(field)?;
            }
        }
        Ok(())
    }
}

/// `MoveRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MoveRequest {
    /// What to move.
    #[serde(deserialize_with = "nullable")]
    pub source: String,
    /// Its new path.
    #[serde(deserialize_with = "nullable")]
    pub destination: String,
}

impl FromProto for MoveRequest {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => self.source = value.string(field)?,
                2 => self.destination = value.string(field)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// `ListDirRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ListDirRequest {
    /// The directory.
    #[serde(deserialize_with = "nullable")]
    pub path: String,
    /// How many levels to list; 0 (or absent) means 1.
    #[serde(deserialize_with = "uint32")]
    pub depth: Option<u32>,
}

impl FromProto for ListDirRequest {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => self.path = value.string(field)?,
                2 => self.depth = Some(value.uint32(field)?),
                _ => {}
            }
        }
        Ok(())
    }
}

/// `WatchDirRequest` and `CreateWatcherRequest` (the same four fields).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WatchRequest {
    /// The directory to watch.
    #[serde(deserialize_with = "nullable")]
    pub path: String,
    /// Watch every subdirectory too, including ones created later.
    #[serde(deserialize_with = "nullable")]
    pub recursive: bool,
    /// Attach the entry's `EntryInfo` to events that have one.
    #[serde(alias = "include_entry", deserialize_with = "nullable")]
    pub include_entry: bool,
    /// Allow NFS/CIFS/SMB/FUSE paths, which are refused by default.
    #[serde(alias = "allow_network_mounts", deserialize_with = "nullable")]
    pub allow_network_mounts: bool,
}

impl FromProto for WatchRequest {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => self.path = value.string(field)?,
                2 => self.recursive = value.boolean(field)?,
                3 => self.include_entry = value.boolean(field)?,
                4 => self.allow_network_mounts = value.boolean(field)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// `GetWatcherEventsRequest` and `RemoveWatcherRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WatcherIdRequest {
    /// The id `CreateWatcher` returned.
    #[serde(alias = "watcher_id", deserialize_with = "nullable")]
    pub watcher_id: String,
}

impl FromProto for WatcherIdRequest {
    fn merge_proto(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            if field == 1 {
                self.watcher_id = value.string(field)?;
            }
        }
        Ok(())
    }
}

// ---- responses ----

/// `StatResponse`, `MakeDirResponse` and `MoveResponse`: one entry.
#[derive(Debug, Clone, Serialize)]
pub struct EntryResponse {
    /// The entry.
    pub entry: EntryInfo,
}

impl ToProto for EntryResponse {
    fn to_proto(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.message(1, |e| self.entry.write(e));
        w.finish()
    }
}

/// `ListDirResponse`.
#[derive(Debug, Clone, Serialize)]
pub struct ListDirResponse {
    /// The entries, depth-first in name order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<EntryInfo>,
}

impl ToProto for ListDirResponse {
    fn to_proto(&self) -> Vec<u8> {
        let mut w = Writer::new();
        for entry in &self.entries {
            w.message(1, |e| entry.write(e));
        }
        w.finish()
    }
}

/// `RemoveResponse` and `RemoveWatcherResponse`.
#[derive(Debug, Clone, Serialize)]
pub struct EmptyResponse {}

impl ToProto for EmptyResponse {
    fn to_proto(&self) -> Vec<u8> {
        Vec::new()
    }
}

/// `CreateWatcherResponse`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateWatcherResponse {
    /// The new watcher's id.
    pub watcher_id: String,
}

impl ToProto for CreateWatcherResponse {
    fn to_proto(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.non_empty(1, self.watcher_id.as_bytes());
        w.finish()
    }
}

/// `GetWatcherEventsResponse`.
#[derive(Debug, Clone, Serialize)]
pub struct GetWatcherEventsResponse {
    /// Every event since the previous call, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<FilesystemEvent>,
}

impl ToProto for GetWatcherEventsResponse {
    fn to_proto(&self) -> Vec<u8> {
        let mut w = Writer::new();
        for event in &self.events {
            w.message(1, |e| event.write(e));
        }
        w.finish()
    }
}

/// `WatchDirResponse`: one message of the `WatchDir` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchDirResponse {
    /// The watch is set up; always the first message.
    Start,
    /// Something changed (boxed: an event with an entry is far larger than the other variants).
    Filesystem(Box<FilesystemEvent>),
    /// Nothing happened for a while.
    Keepalive,
}

impl WatchDirResponse {
    /// The message's payload in `codec`.
    pub fn encode(&self, codec: Codec) -> Vec<u8> {
        match codec {
            Codec::Json => {
                #[derive(Serialize)]
                struct Empty {}
                let value = match self {
                    WatchDirResponse::Start => serde_json::json!({ "start": Empty {} }),
                    WatchDirResponse::Filesystem(e) => serde_json::json!({ "filesystem": e }),
                    WatchDirResponse::Keepalive => serde_json::json!({ "keepalive": Empty {} }),
                };
                // Serialising plain data cannot fail; `{}` is a message clients ignore.
                serde_json::to_vec(&value).unwrap_or_else(|_| b"{}".to_vec())
            }
            Codec::Proto => {
                let mut w = Writer::new();
                match self {
                    // oneof members are written even when empty: their presence is the data.
                    WatchDirResponse::Start => {
                        w.bytes(1, &[]);
                    }
                    WatchDirResponse::Filesystem(e) => {
                        w.message(2, |m| e.write(m));
                    }
                    WatchDirResponse::Keepalive => {
                        w.bytes(3, &[]);
                    }
                }
                w.finish()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn timestamps_format_as_rfc3339() {
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
    }

    #[test]
    fn entry_info_serialises_like_connect_go() {
        let entry = EntryInfo {
            name: "a".into(),
            file_type: FileType::File,
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
        let v: Value = serde_json::to_value(&entry).unwrap();
        assert_eq!(
            v,
            json!({"name":"a","type":"FILE_TYPE_FILE","path":"/a","size":"4","mode":420,
                   "permissions":"-rw-r--r--","owner":"user","group":"user",
                   "modifiedTime":"1970-01-01T00:00:00Z","metadata":{"k":"v"}})
        );
        let link = EntryInfo {
            symlink_target: Some("/t".into()),
            is_symlink: true,
            ..EntryInfo::default()
        };
        assert_eq!(
            serde_json::to_value(&link).unwrap(),
            json!({"symlinkTarget":"/t","isSymlink":true})
        );
    }

    #[test]
    fn watch_messages_encode_in_both_codecs() {
        let start: Value =
            serde_json::from_slice(&WatchDirResponse::Start.encode(Codec::Json)).unwrap();
        assert_eq!(start, json!({"start":{}}));
        let ev = WatchDirResponse::Filesystem(Box::new(FilesystemEvent {
            name: "x".into(),
            event_type: EventType::Write,
            entry: None,
        }));
        let v: Value = serde_json::from_slice(&ev.encode(Codec::Json)).unwrap();
        assert_eq!(
            v,
            json!({"filesystem":{"name":"x","type":"EVENT_TYPE_WRITE"}})
        );
        assert_eq!(WatchDirResponse::Start.encode(Codec::Proto), vec![0x0a, 0]);
        assert_eq!(
            ev.encode(Codec::Proto),
            vec![0x12, 5, 0x0a, 1, b'x', 0x10, 2]
        );
    }

    #[test]
    fn requests_accept_both_name_styles_and_nulls() {
        let r: WatchRequest = serde_json::from_value(
            json!({"path":"/x","recursive":true,"include_entry":true,"allowNetworkMounts":null}),
        )
        .unwrap();
        assert!(r.recursive && r.include_entry && !r.allow_network_mounts);
        let r: ListDirRequest = serde_json::from_value(json!({"path":"/x","depth":"2"})).unwrap();
        assert_eq!(r.depth, Some(2));
        let r: WatcherIdRequest = serde_json::from_value(json!({"watcher_id":"w1"})).unwrap();
        assert_eq!(r.watcher_id, "w1");
        let mut w = Writer::new();
        w.bytes(1, b"/a").bytes(2, b"/b");
        let m = MoveRequest::from_proto(&w.finish()).unwrap();
        assert_eq!((m.source.as_str(), m.destination.as_str()), ("/a", "/b"));
    }
}
