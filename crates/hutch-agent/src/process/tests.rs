use std::path::PathBuf;

use super::cwd::resolve_cwd;
use super::table::{Finished, Table, FINISHED_MAX, FINISHED_RETENTION};
use super::wire::Selector;
use super::*;

fn user(home: &str) -> User {
    User {
        name: "u".into(),
        uid: 1,
        gid: 1,
        home: home.into(),
        groups: vec![1],
    }
}

fn finished(at: Instant, tag: Option<&str>) -> Finished {
    Finished {
        tag: tag.map(str::to_owned),
        end: EndEvent {
            exit_code: 0,
            exited: true,
            status: "exit status 0".into(),
            error: None,
        },
        at,
    }
}

#[test]
fn finished_processes_are_bounded_in_number_and_age() {
    let mut table = Table::default();
    let now = Instant::now();
    for pid in 0..FINISHED_MAX as u32 + 10 {
        table.remember(pid, finished(now, None));
    }
    assert_eq!(table.finished.len(), FINISHED_MAX);
    // An end older than the retention is dropped at the next insert and never selected.
    if let Some(long_ago) = now.checked_sub(FINISHED_RETENTION + Duration::from_secs(1)) {
        let mut table = Table::default();
        table.remember(1, finished(long_ago, Some("t")));
        assert!(table.finished_selected(&Selector::Pid(1)).is_none());
        assert!(table
            .finished_selected(&Selector::Tag("t".into()))
            .is_none());
        table.remember(2, finished(now, Some("t")));
        assert_eq!(table.finished.len(), 1);
        assert_eq!(
            table
                .finished_selected(&Selector::Tag("t".into()))
                .map(|(pid, _)| pid),
            Some(2)
        );
    }
}

#[test]
fn terminal_sizes_default_to_zero_and_saturate() {
    let pty = |cols, rows| Pty {
        size: Some(wire::PtySize { cols, rows }),
    };
    assert_eq!(win_size(&pty(80, 24)), WinSize { cols: 80, rows: 24 });
    assert_eq!(
        win_size(&pty(1 << 20, 0)),
        WinSize {
            cols: u16::MAX,
            rows: 0
        }
    );
    assert_eq!(win_size(&Pty::default()), WinSize { cols: 0, rows: 0 });
}

#[test]
fn cwd_defaults_to_home_and_resolves_relative_and_tilde_paths() {
    let u = user("/tmp");
    assert_eq!(resolve_cwd(None, &u).unwrap(), PathBuf::from("/tmp"));
    assert_eq!(resolve_cwd(Some(""), &u).unwrap(), PathBuf::from("/tmp"));
    assert_eq!(resolve_cwd(Some("~"), &u).unwrap(), PathBuf::from("/tmp"));
    assert_eq!(resolve_cwd(Some(".."), &u).unwrap(), PathBuf::from("/"));
    assert_eq!(
        resolve_cwd(Some("/usr/../etc"), &u).unwrap(),
        PathBuf::from("/etc")
    );
    let missing = resolve_cwd(Some("/no/such/dir"), &u).unwrap_err();
    assert_eq!(missing.code, crate::connect::Code::InvalidArgument);
    assert!(missing.message.contains("/no/such/dir"));
    assert!(resolve_cwd(Some("~root"), &u).is_err());
}
