//! Reading proto3 JSON.

use serde::de::DeserializeOwned;

/// Decodes a message from proto3 JSON.
///
/// The mapping lets a client send `null` for any field to mean its default; the generated
/// deserialisers accept that only for fields with presence. Clients rarely send nulls, so the
/// bytes are decoded directly first; only when that fails are they parsed into a tree, stripped
/// of nulls and decoded again (whose error, if any, is the one reported).
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    if let Ok(message) = serde_json::from_slice(bytes) {
        return Ok(message);
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
    drop_nulls(&mut value);
    serde_json::from_value(value)
}

/// Removes every object member whose value is `null`, at any depth.
fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(members) => {
            members.retain(|_, v| !v.is_null());
            members.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}
