//! Helpers for reading proto3-JSON-shaped input with serde.

use serde::{Deserialize, Deserializer};

/// Deserialises `null` as the type's default, as proto3 JSON requires for every field.
pub fn nullable<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// A `uint32` field, which proto3 JSON allows as a number or a decimal string.
pub fn uint32<'de, D>(de: D) -> Result<Option<u32>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(u32),
        Str(String),
    }
    match Option::<Repr>::deserialize(de)? {
        None => Ok(None),
        Some(Repr::Num(n)) => Ok(Some(n)),
        Some(Repr::Str(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("'{s}' is not a uint32"))),
    }
}
