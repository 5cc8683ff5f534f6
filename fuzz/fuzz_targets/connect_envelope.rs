//! The Connect framing and codecs (`connect.rs`) on arbitrary bytes: the envelope parser, the
//! content-type negotiation, and decoding every request message of both services in both codecs.
#![no_main]

use axum::http::{HeaderMap, HeaderValue};
use hutch_agent::connect::{self, Codec};
use hutch_agent::filesystem::wire as fs;
use hutch_agent::process::wire as process;
use libfuzzer_sys::fuzz_target;

fn decode_all(codec: Codec, bytes: &[u8]) {
    let _ = codec.decode::<process::StartRequest>(bytes);
    let _ = codec.decode::<process::ConnectRequest>(bytes);
    let _ = codec.decode::<process::SendSignalRequest>(bytes);
    let _ = codec.decode::<process::SendInputRequest>(bytes);
    let _ = codec.decode::<process::StreamInputRequest>(bytes);
    let _ = codec.decode::<process::CloseStdinRequest>(bytes);
    let _ = codec.decode::<process::UpdateRequest>(bytes);
    let _ = codec.decode::<process::ListRequest>(bytes);
    let _ = codec.decode::<fs::StatRequest>(bytes);
    let _ = codec.decode::<fs::MakeDirRequest>(bytes);
    let _ = codec.decode::<fs::RemoveRequest>(bytes);
    let _ = codec.decode::<fs::MoveRequest>(bytes);
    let _ = codec.decode::<fs::ListDirRequest>(bytes);
    let _ = codec.decode::<fs::WatchDirRequest>(bytes);
    let _ = codec.decode::<fs::CreateWatcherRequest>(bytes);
    let _ = codec.decode::<fs::GetWatcherEventsRequest>(bytes);
    let _ = codec.decode::<fs::RemoveWatcherRequest>(bytes);
}

fuzz_target!(|data: &[u8]| {
    // The envelope parser on raw request bodies.
    let unwrapped = connect::single_message(data);

    // Framing round-trips whatever the payload.
    if data.len() <= connect::MAX_MESSAGE_BYTES {
        let framed = connect::message_frame(data);
        assert_eq!(connect::single_message(&framed).ok(), Some(data));
    }

    // Content-type and protocol-version negotiation on arbitrary header values.
    let head = &data[..data.len().min(64)];
    if let Ok(value) = HeaderValue::from_bytes(head) {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", value.clone());
        headers.insert("connect-protocol-version", value);
        let _ = connect::stream_codec(&headers);
        let _ = connect::unary_codec(&headers);
        let _ = connect::check_protocol_version(&headers);
    }

    // Every request message, in both codecs, from the unwrapped payload or the raw bytes.
    let payload = unwrapped.unwrap_or(data);
    decode_all(Codec::Json, payload);
    decode_all(Codec::Proto, payload);
});
