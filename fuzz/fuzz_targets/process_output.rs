//! The server's reader of a command's output as an agent streams it (template builds): any
//! bytes an agent sends, cut anywhere, must never panic, never hold more than one frame and
//! one chunk, never hand on a line over the bound, and read the same however they are cut.
#![no_main]

use hutch_contracts::process_output::{OutputReader, Stream, MAX_FRAME, MAX_LINE};
use libfuzzer_sys::fuzz_target;

type Read = (Vec<(Stream, String)>, Result<i32, String>);

fn read(stream: &[u8], chunk: usize) -> Read {
    let mut reader = OutputReader::default();
    let mut lines = Vec::new();
    for piece in stream.chunks(chunk) {
        if let Err(e) = reader.push(piece, |s, l| lines.push((s, l.to_owned()))) {
            return (lines, Err(e));
        }
        assert!(
            reader.buffered() <= 5 + MAX_FRAME + 2 * MAX_LINE + piece.len(),
            "the reader holds {} bytes",
            reader.buffered()
        );
    }
    let exit = reader.finish(|s, l| lines.push((s, l.to_owned())));
    (lines, exit)
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size; the rest is the stream.
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let whole = read(stream, stream.len().max(1));
    for (_, line) in &whole.0 {
        assert!(
            line.len() <= MAX_LINE,
            "a line of {} bytes was handed on",
            line.len()
        );
    }
    let pieces = read(stream, usize::from(cut).max(1));
    // Lines cut at a chunk boundary inside a UTF-8 character may differ in their replacement
    // characters, never in the exit status or the error.
    assert_eq!(whole.1, pieces.1);
});
