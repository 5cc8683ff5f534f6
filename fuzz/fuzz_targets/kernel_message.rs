//! A kernel's messages as the agent reads them off ZeroMQ: arbitrary frames, signed with the
//! session key or not, must never panic the decoder, the execution state machine that turns
//! messages into results, or the rendering of those results as E2B's output lines.
#![no_main]

use std::collections::VecDeque;

use bytes::Bytes;
use hutch_kernel::e2b;
use hutch_kernel::execute::ExecutionState;
use hutch_kernel::message::{decode, Channel, Signer};
use libfuzzer_sys::fuzz_target;

/// Frames are separated by this pair of bytes (which no UTF-8 text holds).
const SEPARATOR: &[u8] = &[0xff, 0xfe];

fn frames(data: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(2).position(|w| w == SEPARATOR) {
        out.push(Bytes::copy_from_slice(&rest[..at]));
        rest = &rest[at + 2..];
    }
    out.push(Bytes::copy_from_slice(rest));
    out
}

fuzz_target!(|data: &[u8]| {
    let frames = frames(data);
    // With a key: the signature is checked before any JSON is parsed.
    let _ = decode(frames.clone(), &Signer::new("a-session-key"));
    // Without one (a kernel started without a key): the JSON parts reach serde.
    let Ok(msg) = decode(frames, &Signer::new("")) else {
        return;
    };
    for channel in [
        Channel::Shell,
        Channel::IoPub,
        Channel::Stdin,
        Channel::Control,
    ] {
        let mut state = ExecutionState::default();
        let mut events = VecDeque::new();
        state.handle(channel, &msg, &mut events);
        state.handle(channel, &msg, &mut events);
        for event in &events {
            for line in e2b::event_lines(event) {
                let _ = serde_json::to_vec(&line);
            }
        }
    }
});
