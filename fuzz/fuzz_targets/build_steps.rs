//! A template build's steps as the SDK sends them (`POST /v2/templates/{id}/builds/{build}`):
//! any JSON must type-check to steps or be refused with an error, never panic.
#![no_main]

use hutch_contracts::template::{BuildStep, WireStep};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(steps) = serde_json::from_slice::<Vec<WireStep>>(data) else {
        return;
    };
    for wire in &steps {
        match BuildStep::parse(wire) {
            Ok(step) => drop(format!("{step:?}")),
            Err(e) => assert!(!e.to_string().is_empty(), "an error without a message"),
        }
    }
});
