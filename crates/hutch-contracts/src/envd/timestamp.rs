//! `google.protobuf.Timestamp` in proto3 JSON: an RFC 3339 string in UTC.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::google::protobuf::Timestamp;

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range proto3 JSON can express.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// Why a string is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError(String);

impl std::fmt::Display for TimestampError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}' is not an RFC 3339 timestamp", self.0)
    }
}

impl std::error::Error for TimestampError {}

impl Timestamp {
    /// RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, as proto3 JSON writes it. Times
    /// outside years 1..=9999 (possible with `touch -d`) are clamped so clients can parse them.
    pub fn to_rfc3339(&self) -> String {
        let seconds = self.seconds.clamp(MIN_SECONDS, MAX_SECONDS);
        let nanos = self.nanos.clamp(0, 999_999_999) as u32;
        // In range by the clamps above, so `from_timestamp` always has an answer.
        DateTime::<Utc>::from_timestamp(seconds, nanos)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`. A leap second (`:60`) is refused, as
    /// a Timestamp's nanos cannot hold it.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let time = DateTime::parse_from_rfc3339(text)
            .ok()
            .filter(|time| time.timestamp_subsec_nanos() < 1_000_000_000)
            .ok_or_else(|| TimestampError(text.to_owned()))?;
        Ok(Timestamp {
            seconds: time.timestamp(),
            nanos: time.timestamp_subsec_nanos() as i32,
        })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}
