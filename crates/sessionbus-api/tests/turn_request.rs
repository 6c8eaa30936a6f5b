//! `SessionTurnRequest::new` keeps every check of lash's constructor.

use sessionbus_api::{ErrorKind, ExecutionScope, SessionTurnRequest, TurnInput};

fn input_with_trace(turn_id: Option<&str>) -> TurnInput {
    TurnInput { trace_turn_id: turn_id.map(str::to_owned), ..TurnInput::text("hi") }
}

#[test]
fn a_valid_request_sets_trace_turn_id() {
    let request =
        SessionTurnRequest::new("s1", "t1", input_with_trace(None), ExecutionScope::turn("s1", "t1")).expect("valid");
    assert_eq!(request.session_id(), "s1");
    assert_eq!(request.turn_id(), "t1");
    assert_eq!(request.input().trace_turn_id.as_deref(), Some("t1"));
    let matching = SessionTurnRequest::new("s1", "t1", input_with_trace(Some("t1")), ExecutionScope::turn("s1", "t1"));
    assert!(matching.is_ok());
}

#[test]
fn empty_or_blank_turn_ids_are_refused() {
    for turn_id in ["", "   "] {
        let err = SessionTurnRequest::new("s1", turn_id, input_with_trace(None), ExecutionScope::turn("s1", turn_id))
            .expect_err("blank turn id");
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
        assert_eq!(err.message(), "session turns require a non-empty stable turn id");
    }
}

#[test]
fn scope_must_be_a_turn_scope_with_the_same_turn_id() {
    let err = SessionTurnRequest::new("s1", "t1", input_with_trace(None), ExecutionScope::turn("s1", "t2"))
        .expect_err("other turn");
    assert_eq!(err.message(), "session turn `t1` requires an effect turn scope with the same id");
    let not_a_turn = ExecutionScope::Process { process_id: "p".into() };
    let err = SessionTurnRequest::new("s1", "t1", input_with_trace(None), not_a_turn).expect_err("not a turn scope");
    assert_eq!(err.message(), "session turn `t1` requires an effect turn scope with the same id");
}

#[test]
fn scope_must_name_the_same_session() {
    let err = SessionTurnRequest::new("s1", "t1", input_with_trace(None), ExecutionScope::turn("s2", "t1"))
        .expect_err("other session");
    assert_eq!(err.message(), "session turn `t1` requires an execution scope for session `s1`");
}

#[test]
fn trace_turn_id_must_match() {
    let err = SessionTurnRequest::new("s1", "t1", input_with_trace(Some("t9")), ExecutionScope::turn("s1", "t1"))
        .expect_err("mismatched trace turn id");
    assert_eq!(err.message(), "input trace_turn_id `t9` does not match turn id `t1`");
}
