//! Request parsing of the control-plane API.

use super::*;

#[test]
fn metadata_filter_decodes_quoted_pairs() {
    // The SDK quotes each key and value, then urlencodes the joined string as one value.
    assert_eq!(
        parse_metadata_filter("user%253Aid=a%2526b&k=v"),
        vec![
            ("user:id".to_string(), "a&b".to_string()),
            ("k".to_string(), "v".to_string())
        ]
    );
}

#[test]
fn list_params_are_checked() {
    let p = |f: fn(&mut ListParams)| {
        let mut p = ListParams::default();
        f(&mut p);
        p
    };
    let q = parse_list(p(|_| {}), false).unwrap();
    assert_eq!(
        q.states,
        vec![SandboxState::Running],
        "v1 lists running ones"
    );
    assert!(parse_list(p(|_| {}), true).unwrap().states.is_empty());
    let q = parse_list(p(|p| p.state = Some("paused,running".into())), true).unwrap();
    assert_eq!(q.states.len(), 2);
    for bad in [
        p(|p| p.state = Some("gone".into())),
        p(|p| p.order = Some("up".into())),
        p(|p| p.limit = Some("0".into())),
        p(|p| p.limit = Some("1001".into())),
        p(|p| p.started_after = Some("yesterday".into())),
        // Present but empty is not absent (E2B's server refuses these too).
        p(|p| p.state = Some(String::new())),
        p(|p| p.order = Some(String::new())),
        p(|p| p.limit = Some(String::new())),
        p(|p| p.started_after = Some(String::new())),
    ] {
        assert_eq!(
            parse_list(bad, true).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
    assert!(
        parse_list(p(|p| p.order = Some("asc".into())), true)
            .unwrap()
            .ascending
    );
}

#[test]
fn negative_timeouts_and_bad_ids_are_refused() {
    assert_eq!(
        timeout_arg(Some(-1)).unwrap_err().status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(timeout_arg(Some(5)).unwrap(), Some(5));
    assert_eq!(
        id_format("../etc").unwrap_err().status,
        StatusCode::NOT_FOUND
    );
    assert!(id_format("abc123").is_ok());
}
