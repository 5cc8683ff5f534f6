//! Mapping kernel output to the lines of E2B's `/execute` NDJSON stream
//! (`docs/wire.md` §4).
//!
//! The reference is E2B's own server (`e2b-dev/code-interpreter`, `template/server`:
//! `messaging.py` and `api/models/result.py`); where it does something surprising we
//! copy it, because the official SDKs were tested against exactly that:
//! - `text/plain` loses one pair of surrounding quotes, `'…'` or `"…"`, and only when the
//!   text is non-empty and both ends carry the same quote (`'a"` is left alone).
//! - A traceback is the kernel's list of lines joined with `""`, not `"\n"`. IPython's
//!   entries mostly lack a trailing newline, so E2B's lines run together; we keep that.
//! - `extra` holds every MIME type not mapped to a field and is sent even when empty (`{}`),
//!   because E2B drops only `None` fields.
//! - `clear_output` and `update_display_data` produce nothing.
//! - An `execute_reply` with status `abort` becomes an `ExecutionAborted` error.

use serde_json::{json, Map, Value};

use crate::execute::{ExecutionEvent, ReplyStatus, StreamName};

/// MIME type → E2B result field, in E2B's order.
const FIELDS: [(&str, &str); 12] = [
    ("text/plain", "text"),
    ("text/html", "html"),
    ("text/markdown", "markdown"),
    ("image/svg+xml", "svg"),
    ("image/png", "png"),
    ("image/jpeg", "jpeg"),
    ("application/pdf", "pdf"),
    ("text/latex", "latex"),
    ("application/json", "json"),
    ("application/javascript", "javascript"),
    ("e2b/data", "data"),
    ("e2b/chart", "chart"),
];

/// The `{"type":"result", ...}` object for one MIME bundle.
///
/// `is_main_result` is true for `execute_result`, false for `display_data`.
pub fn result_json(bundle: &Map<String, Value>, is_main_result: bool) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("type".into(), json!("result"));
    let mut extra = bundle.clone();
    for (mime, field) in FIELDS {
        let Some(value) = extra.remove(mime) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let value = if field == "text" {
            match value {
                Value::String(s) => Value::String(strip_quotes(&s).to_owned()),
                other => other,
            }
        } else {
            value
        };
        out.insert(field.into(), value);
    }
    extra.retain(|_, v| !v.is_null());
    out.insert("extra".into(), Value::Object(extra));
    out.insert("is_main_result".into(), json!(is_main_result));
    out
}

/// Removes one pair of matching surrounding quotes, as E2B's `Result` does.
pub fn strip_quotes(text: &str) -> &str {
    for q in ['\'', '"'] {
        if !text.is_empty() && text.starts_with(q) && text.ends_with(q) {
            // A lone quote starts and ends with itself: E2B's text[1:-1] makes it empty.
            return text.get(1..text.len().saturating_sub(1)).unwrap_or("");
        }
    }
    text
}

/// A traceback as E2B sends it: the kernel's entries joined with nothing in between.
pub fn join_traceback(lines: &[String]) -> String {
    lines.concat()
}

/// A kernel ISO 8601 date in the form E2B emits (`datetime.isoformat()` of a UTC time).
///
/// `2024-05-01T12:00:00.123456Z` becomes `2024-05-01T12:00:00.123456+00:00`; unparseable
/// input is passed through unchanged.
pub fn timestamp(date: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(date) {
        Ok(t) => {
            let t = t.with_timezone(&chrono::Utc);
            // Python's isoformat omits the fraction when microseconds are zero.
            if t.timestamp_subsec_micros() == 0 {
                t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
            } else {
                t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
            }
        }
        Err(_) => date.to_owned(),
    }
}

/// An `{"type":"error", ...}` line.
pub fn error_line(name: &str, value: &str, traceback: &str) -> Value {
    json!({"type": "error", "name": name, "value": value, "traceback": traceback})
}

/// The NDJSON objects E2B would send for one event, in order (often one, sometimes none).
///
/// [`ExecutionEvent::Done`] yields `{"type":"end_of_execution"}` last, so a caller writes
/// every returned object and stops after `Done`. Keepalives are the caller's, since only
/// it knows how long the HTTP stream has been silent.
pub fn event_lines(event: &ExecutionEvent) -> Vec<Value> {
    match event {
        ExecutionEvent::ExecutionCount(n) => {
            vec![json!({"type": "number_of_executions", "execution_count": n})]
        }
        ExecutionEvent::Stream {
            name,
            text,
            timestamp: date,
        } => {
            let kind = match name {
                StreamName::Stdout => "stdout",
                StreamName::Stderr => "stderr",
            };
            let mut line = json!({"type": kind, "text": text});
            if let Some(date) = date {
                line["timestamp"] = json!(timestamp(date));
            }
            vec![line]
        }
        ExecutionEvent::Result {
            data,
            is_main_result,
            ..
        } => vec![Value::Object(result_json(data, *is_main_result))],
        ExecutionEvent::Error {
            ename,
            evalue,
            traceback,
        } => vec![error_line(ename, evalue, &join_traceback(traceback))],
        ExecutionEvent::UpdateDisplayData { .. } | ExecutionEvent::ClearOutput { .. } => vec![],
        ExecutionEvent::Done(reply) => {
            let mut lines = Vec::new();
            if reply.status == ReplyStatus::Aborted {
                lines.push(error_line("ExecutionAborted", "Execution was aborted", ""));
            }
            lines.push(json!({"type": "end_of_execution"}));
            lines
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::ExecuteReply;

    fn bundle(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_known_mime_type_maps_to_its_field() {
        let b = bundle(json!({
            "text/plain": "2", "text/html": "<b>", "text/markdown": "# h",
            "image/svg+xml": "<svg/>", "image/png": "iVBO", "image/jpeg": "/9j/",
            "application/pdf": "JVBE", "text/latex": "$x$",
            "application/json": {"a": [1]}, "application/javascript": "alert(1)",
            "e2b/data": {"x": [1, 2]}, "e2b/chart": {"type": "line", "elements": []},
            "application/vnd.plotly.v1+json": {"data": []}
        }));
        let r = result_json(&b, true);
        let expect = json!({
            "type": "result", "text": "2", "html": "<b>", "markdown": "# h", "svg": "<svg/>",
            "png": "iVBO", "jpeg": "/9j/", "pdf": "JVBE", "latex": "$x$",
            "json": {"a": [1]}, "javascript": "alert(1)", "data": {"x": [1, 2]},
            "chart": {"type": "line", "elements": []},
            "extra": {"application/vnd.plotly.v1+json": {"data": []}},
            "is_main_result": true
        });
        assert_eq!(Value::Object(r), expect);
    }

    #[test]
    fn display_data_is_not_main_and_nulls_are_left_out() {
        let r = result_json(
            &bundle(json!({"image/png": "iVBO", "text/html": null, "x/y": null})),
            false,
        );
        assert_eq!(
            Value::Object(r),
            json!({"type": "result", "png": "iVBO", "extra": {}, "is_main_result": false})
        );
    }

    #[test]
    fn text_plain_loses_one_pair_of_matching_quotes_only() {
        assert_eq!(strip_quotes("'hi'"), "hi");
        assert_eq!(strip_quotes("\"hi\""), "hi");
        assert_eq!(strip_quotes("''"), "");
        assert_eq!(strip_quotes("'"), "");
        assert_eq!(strip_quotes("'a\""), "'a\"");
        assert_eq!(strip_quotes("\"'x'\""), "'x'");
        assert_eq!(strip_quotes("2"), "2");
        assert_eq!(strip_quotes(""), "");
        assert_eq!(strip_quotes("'é'"), "é");
    }

    #[test]
    fn events_become_e2b_lines() {
        let lines = event_lines(&ExecutionEvent::Stream {
            name: StreamName::Stderr,
            text: "oops\n".into(),
            timestamp: Some("2024-05-01T12:00:00.123456Z".into()),
        });
        assert_eq!(
            lines,
            vec![json!({"type": "stderr", "text": "oops\n",
                        "timestamp": "2024-05-01T12:00:00.123456+00:00"})]
        );
        assert_eq!(
            event_lines(&ExecutionEvent::ExecutionCount(3)),
            vec![json!({"type": "number_of_executions", "execution_count": 3})]
        );
        let err = event_lines(&ExecutionEvent::Error {
            ename: "NameError".into(),
            evalue: "name 'x' is not defined".into(),
            traceback: vec!["---".into(), "NameError: x".into()],
        });
        assert_eq!(err[0]["traceback"], "---NameError: x");
        assert_eq!(err[0]["name"], "NameError");
        assert!(event_lines(&ExecutionEvent::ClearOutput { wait: true }).is_empty());
        let done = |status| {
            event_lines(&ExecutionEvent::Done(ExecuteReply {
                status,
                execution_count: Some(1),
            }))
        };
        assert_eq!(
            done(ReplyStatus::Ok),
            vec![json!({"type": "end_of_execution"})]
        );
        let aborted = done(ReplyStatus::Aborted);
        assert_eq!(aborted[0]["name"], "ExecutionAborted");
        assert_eq!(aborted[1]["type"], "end_of_execution");
    }

    #[test]
    fn timestamps_follow_python_isoformat() {
        assert_eq!(
            timestamp("2024-05-01T12:00:00Z"),
            "2024-05-01T12:00:00+00:00"
        );
        assert_eq!(
            timestamp("2024-05-01T14:00:00.5+02:00"),
            "2024-05-01T12:00:00.500000+00:00"
        );
        assert_eq!(timestamp("garbage"), "garbage");
    }
}
