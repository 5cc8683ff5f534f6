//! The state machine fed hand-made messages: completion, errors, displays and the output
//! barrier.

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::*;
use crate::message::{Channel, Header, Message};

fn msg(msg_type: &str, content: Value) -> Message {
    let mut m = Message::new(msg_type, content, "kernel", "k");
    m.parent_header = Some(Header {
        msg_id: "req".into(),
        ..Header::default()
    });
    m
}

fn run(script: &[(Channel, Message)]) -> Vec<ExecutionEvent> {
    let mut st = ExecutionState::default();
    let mut out = VecDeque::new();
    for (ch, m) in script {
        st.handle(*ch, m, &mut out);
    }
    out.into_iter().collect()
}

use Channel::{IoPub, Shell};

fn busy() -> (Channel, Message) {
    (IoPub, msg("status", json!({"execution_state": "busy"})))
}
fn idle() -> (Channel, Message) {
    (IoPub, msg("status", json!({"execution_state": "idle"})))
}
fn input(n: u64) -> (Channel, Message) {
    (
        IoPub,
        msg("execute_input", json!({"code": "", "execution_count": n})),
    )
}
fn reply(status: &str, n: u64) -> (Channel, Message) {
    (
        Shell,
        msg(
            "execute_reply",
            json!({"status": status, "execution_count": n,
                   "ename": "E", "evalue": "v", "traceback": ["t1", "t2"]}),
        ),
    )
}

#[test]
fn completes_only_after_reply_and_idle_in_either_order() {
    let out = vec![
        busy(),
        input(4),
        (
            IoPub,
            msg("stream", json!({"name": "stdout", "text": "a\n"})),
        ),
        (
            IoPub,
            msg(
                "execute_result",
                json!({"data": {"text/plain": "2"}, "metadata": {}, "execution_count": 4}),
            ),
        ),
    ];
    let mut reply_first = out.clone();
    reply_first.push(reply("ok", 4));
    let partial = run(&reply_first);
    assert!(!partial.iter().any(|e| matches!(e, ExecutionEvent::Done(_))));
    reply_first.push(idle());
    let mut idle_first = out;
    idle_first.push(idle());
    idle_first.push(reply("ok", 4));
    for events in [run(&reply_first), run(&idle_first)] {
        assert_eq!(events[0], ExecutionEvent::ExecutionCount(4));
        assert!(
            matches!(&events[1], ExecutionEvent::Stream { name: StreamName::Stdout, text, .. } if text == "a\n")
        );
        assert!(
            matches!(&events[2], ExecutionEvent::Result { is_main_result: true, data, .. } if data["text/plain"] == "2")
        );
        assert_eq!(
            events[3],
            ExecutionEvent::Done(ExecuteReply {
                status: ReplyStatus::Ok,
                execution_count: Some(4)
            })
        );
        assert_eq!(events.len(), 4);
    }
}

#[test]
fn error_is_reported_once_and_a_reply_error_waits_for_iopub() {
    let iopub_err = (
        IoPub,
        msg(
            "error",
            json!({"ename": "NameError", "evalue": "x", "traceback": ["a", "b"]}),
        ),
    );
    let events = run(&[busy(), input(1), reply("error", 1), iopub_err, idle()]);
    let errors: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, ExecutionEvent::Error { .. }))
        .collect();
    assert_eq!(errors.len(), 1);
    assert!(
        matches!(errors[0], ExecutionEvent::Error { ename, traceback, .. } if ename == "NameError" && traceback.len() == 2)
    );

    // A kernel that reports the error only in the reply still yields it, before Done.
    let events = run(&[busy(), reply("error", 2), idle()]);
    assert_eq!(events[0], ExecutionEvent::ExecutionCount(2));
    assert!(matches!(&events[1], ExecutionEvent::Error { ename, .. } if ename == "E"));
    assert!(matches!(
        &events[2],
        ExecutionEvent::Done(ExecuteReply {
            status: ReplyStatus::Error,
            ..
        })
    ));
}

#[test]
fn aborted_reply_ends_without_idle() {
    let events = run(&[reply("aborted", 0)]);
    assert_eq!(
        events,
        vec![ExecutionEvent::Done(ExecuteReply {
            status: ReplyStatus::Aborted,
            execution_count: Some(0)
        })]
    );
}

#[test]
fn display_updates_and_clear_output_are_typed() {
    let events = run(&[
        (
            IoPub,
            msg(
                "display_data",
                json!({"data": {"text/html": "<b>"}, "metadata": {}, "transient": {"display_id": "d1"}}),
            ),
        ),
        (
            IoPub,
            msg(
                "update_display_data",
                json!({"data": {"text/html": "<i>"}, "metadata": {}, "transient": {"display_id": "d1"}}),
            ),
        ),
        (IoPub, msg("clear_output", json!({"wait": true}))),
        (IoPub, msg("comm_open", json!({}))),
    ]);
    assert!(
        matches!(&events[0], ExecutionEvent::Result { is_main_result: false, display_id: Some(d), .. } if d == "d1")
    );
    assert!(
        matches!(&events[1], ExecutionEvent::UpdateDisplayData { display_id: Some(d), .. } if d == "d1")
    );
    assert_eq!(events[2], ExecutionEvent::ClearOutput { wait: true });
    assert_eq!(events.len(), 3);
}

#[test]
fn request_content_has_e2b_defaults() {
    let c = ExecuteRequest::new("1+1").content();
    assert_eq!(
        c,
        json!({"code": "1+1", "silent": false, "store_history": true,
               "user_expressions": {}, "allow_stdin": false, "stop_on_error": true})
    );
}

/// `m` as if sent for the barrier request "bar".
fn of_barrier((ch, mut m): (Channel, Message)) -> (Channel, Message) {
    m.parent_header = Some(Header {
        msg_id: "bar".into(),
        ..Header::default()
    });
    (ch, m)
}

fn stream(text: &str) -> (Channel, Message) {
    (
        IoPub,
        msg("stream", json!({"name": "stdout", "text": text})),
    )
}

fn run_with_barrier(script: &[(Channel, Message)]) -> (Vec<ExecutionEvent>, ExecutionState) {
    let mut st = ExecutionState::with_barrier("bar", "MARK");
    let mut out = VecDeque::new();
    for (ch, m) in script {
        st.handle(*ch, m, &mut out);
    }
    (out.into_iter().collect(), st)
}

fn texts(events: &[ExecutionEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            ExecutionEvent::Stream { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn barrier_keeps_the_execution_open_for_late_output() {
    let (events, st) = run_with_barrier(&[
        busy(),
        input(1),
        idle(),
        reply("ok", 1),
        // The cell's own output, after its idle and reply.
        stream("late\n"),
        of_barrier(busy()),
        // The cell's output, forwarded once the barrier was the current request.
        of_barrier(stream("later\n")),
        of_barrier(idle()),
        of_barrier(reply("ok", 1)),
    ]);
    assert!(!st.is_done(), "the marker has not arrived yet");
    assert!(!events.iter().any(|e| matches!(e, ExecutionEvent::Done(_))));
    assert_eq!(texts(&events), ["late\n", "later\n"]);

    let (events, st) = run_with_barrier(&[
        busy(),
        input(1),
        stream("a\n"),
        idle(),
        reply("ok", 1),
        of_barrier(busy()),
        of_barrier(stream("bMARK\n")),
        of_barrier(idle()),
        of_barrier(reply("ok", 1)),
    ]);
    assert!(st.is_done());
    assert_eq!(texts(&events), ["a\n", "b"]);
    assert!(matches!(events.last(), Some(ExecutionEvent::Done(_))));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ExecutionEvent::ExecutionCount(1)))
            .count(),
        1
    );
}

#[test]
fn marker_before_the_cells_end_waits_for_idle_and_reply() {
    let (events, st) = run_with_barrier(&[busy(), of_barrier(stream("MARK\n")), idle()]);
    assert!(!st.is_done());
    assert!(texts(&events).is_empty());
    let mut st = st;
    let mut out = VecDeque::new();
    let (ch, m) = reply("ok", 1);
    st.handle(ch, &m, &mut out);
    assert!(st.is_done());
}

#[test]
fn a_failed_barrier_or_a_given_up_one_ends_the_execution() {
    let (_, st) = run_with_barrier(&[idle(), reply("ok", 1), of_barrier(reply("aborted", 1))]);
    assert!(st.is_done());

    let (_, mut st) = run_with_barrier(&[
        idle(),
        reply("ok", 1),
        of_barrier(idle()),
        of_barrier(reply("ok", 1)),
    ]);
    assert!(st.barrier_stalled());
    let mut out = VecDeque::new();
    st.give_up_barrier(&mut out);
    assert!(st.is_done());
    assert!(matches!(out.back(), Some(ExecutionEvent::Done(_))));
}

#[test]
fn late_results_parented_to_the_barrier_are_the_cells() {
    let (events, _) = run_with_barrier(&[
        idle(),
        reply("ok", 1),
        of_barrier((
            IoPub,
            msg(
                "execute_result",
                json!({"data": {"text/plain": "42"}, "metadata": {}}),
            ),
        )),
    ]);
    assert!(matches!(
        &events[..],
        [ExecutionEvent::Result {
            is_main_result: true,
            ..
        }]
    ));
}
