//! `google.protobuf.Timestamp` in proto3 JSON: an RFC 3339 string in UTC.

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

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let bad = || TimestampError(text.to_owned());
        let b = text.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Result<i64, TimestampError> {
            let digits = b.get(range).ok_or_else(bad)?;
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            Ok(digits
                .iter()
                .fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
        };
        let separators_ok = b.len() >= 20
            && b[4] == b'-'
            && b[7] == b'-'
            && matches!(b[10], b'T' | b't')
            && b[13] == b':'
            && b[16] == b':';
        if !separators_ok {
            return Err(bad());
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
            return Err(bad());
        }
        if second > 59 {
            return Err(bad());
        }
        let mut rest = &text[19..];
        let mut nanos = 0i32;
        if let Some(fraction) = rest.strip_prefix('.') {
            let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if len == 0 || len > 9 {
                return Err(bad());
            }
            let digits: i32 = fraction[..len].parse().map_err(|_| bad())?;
            nanos = digits * 10i32.pow(9 - len as u32);
            rest = &fraction[len..];
        }
        let offset = match rest {
            "Z" | "z" => 0,
            _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
                let sign = match rest.as_bytes()[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return Err(bad()),
                };
                let tail = &b[b.len() - 5..];
                if !tail[..2].iter().chain(&tail[3..]).all(u8::is_ascii_digit) {
                    return Err(bad());
                }
                let hours = i64::from(tail[0] - b'0') * 10 + i64::from(tail[1] - b'0');
                let minutes = i64::from(tail[3] - b'0') * 10 + i64::from(tail[4] - b'0');
                sign * (hours * 3600 + minutes * 60)
            }
            _ => return Err(bad()),
        };
        let days = days_from_civil(year, month as u32, day as u32);
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
        Ok(Timestamp { seconds, nanos })
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

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
