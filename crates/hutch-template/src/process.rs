//! Running a child process while streaming its output line by line.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;

/// How many trailing output lines are kept for error messages.
pub(crate) const TAIL_LINES: usize = 50;

/// Longest line kept in the tail; a runaway line (a progress bar without
/// newlines, binary junk) must not blow up an error message.
const MAX_LINE_CHARS: usize = 500;

/// The result of [`run_streaming`].
pub(crate) struct Finished {
    /// How the child exited.
    pub status: ExitStatus,
    /// The last [`TAIL_LINES`] lines of stdout and stderr, interleaved in the
    /// order they arrived.
    pub tail: Tail,
}

/// A bounded buffer of the most recent output lines.
#[derive(Default)]
pub(crate) struct Tail {
    lines: VecDeque<String>,
}

impl Tail {
    /// Appends a line, dropping the oldest one past [`TAIL_LINES`].
    pub fn push(&mut self, line: &str) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        let mut line = line.to_string();
        if line.chars().count() > MAX_LINE_CHARS {
            line = line.chars().take(MAX_LINE_CHARS).collect::<String>() + "…";
        }
        self.lines.push_back(line);
    }

    /// The kept lines joined with newlines.
    pub fn joined(&self) -> String {
        self.lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Describes an exit status for messages: "exit code 1" or "killed by signal 9".
pub(crate) fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => status.to_string(),
    }
}

/// Spawns `cmd` with stdin closed and both output streams piped, calls
/// `on_line` for every line (stdout and stderr merged, `\r` progress redraws
/// split into lines too), and waits for it to exit.
///
/// Each stream is drained by its own thread because a child blocked writing
/// to a full stderr pipe while we wait on stdout would deadlock.
pub(crate) fn run_streaming(
    cmd: &mut Command,
    on_line: &mut dyn FnMut(&str),
) -> std::io::Result<Finished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;

    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(spawn_reader(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(spawn_reader(err, tx.clone()));
    }
    // Drop our sender so the loop below ends once both readers hit EOF.
    drop(tx);

    let mut tail = Tail::default();
    for line in rx {
        tail.push(&line);
        on_line(&line);
    }
    for r in readers {
        // A reader only ends by EOF or a read error; either way there is
        // nothing left to collect, and a panic there cannot carry data.
        let _ = r.join();
    }
    let status = child.wait()?;
    Ok(Finished { status, tail })
}

fn spawn_reader<R: Read + Send + 'static>(
    stream: R,
    tx: mpsc::Sender<String>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    for piece in text.split(['\n', '\r']) {
                        let piece = piece.trim_end();
                        if !piece.is_empty() && tx.send(piece.to_string()).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_both_outputs_and_keeps_tail() {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("i=0; while [ $i -lt 60 ]; do echo out$i; i=$((i+1)); done; echo err >&2; exit 3");
        let mut seen = Vec::new();
        let fin = run_streaming(&mut cmd, &mut |l| seen.push(l.to_string())).expect("sh runs");
        assert_eq!(fin.status.code(), Some(3));
        assert_eq!(describe_status(&fin.status), "exit code 3");
        assert_eq!(seen.len(), 61);
        assert!(seen.contains(&"err".to_string()));
        let tail = fin.tail.joined();
        assert_eq!(tail.lines().count(), TAIL_LINES);
        assert!(!tail.contains("out0\n"));
        assert!(tail.contains("out59"));
    }
}
