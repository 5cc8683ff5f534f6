//! The envd protocol: the messages of E2B's in-sandbox `process` and `filesystem` Connect
//! services, generated from `proto/process.proto` and `proto/filesystem.proto`.
//!
//! Each message is a [`prost::Message`] (the binary format) and implements serde in proto3's
//! canonical JSON mapping (lowerCamelCase names, 64-bit integers as strings, enums by name,
//! bytes as base64, unknown fields ignored). Decode JSON with [`from_json`], which also accepts
//! `null` for any field as the mapping requires.

#[allow(clippy::all)]
/// `package process`: starting processes, their output, input and signals.
pub mod process {
    include!(concat!(env!("OUT_DIR"), "/process.rs"));
    include!(concat!(env!("OUT_DIR"), "/process.serde.rs"));
}

#[allow(clippy::all)]
/// `package filesystem`: stat, list, move, remove and watch paths.
pub mod filesystem {
    include!(concat!(env!("OUT_DIR"), "/filesystem.rs"));
    include!(concat!(env!("OUT_DIR"), "/filesystem.serde.rs"));
}

/// The well-known types the services use.
pub mod google {
    #[allow(clippy::all)]
    /// `package google.protobuf`.
    pub mod protobuf {
        include!(concat!(env!("OUT_DIR"), "/google.protobuf.rs"));
    }
}

mod json;
mod timestamp;

pub use json::from_json;
pub use timestamp::TimestampError;

#[cfg(test)]
mod tests;
