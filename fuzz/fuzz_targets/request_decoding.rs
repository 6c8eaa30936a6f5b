//! Fuzzes what a worker does with bytes from the wire before any host sees them: the
//! request subject (session id token and op) and every op's body decoding. Nothing may
//! panic; every refusal is an `InvalidRequest`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionbus_api::{AppendSessionNodesRequest, ErrorKind, SessionCreateRequest, ToolState};
use sessionbus_nats::Subjects;
use sessionbus_nats::wire::{
    Empty, GraphPageRequest, MembershipRequest, StartTurnRequest, ToolCatalogRequest, TraceRequest, decode_request,
};

fn refused_as_invalid<T: serde::de::DeserializeOwned>(op: &str, data: &[u8]) {
    if let Err(err) = decode_request::<T>(op, data) {
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    }
}

fuzz_target!(|data: &[u8]| {
    refused_as_invalid::<Empty>("snapshot", data);
    refused_as_invalid::<GraphPageRequest>("graph_page", data);
    refused_as_invalid::<ToolCatalogRequest>("tool_catalog", data);
    refused_as_invalid::<ToolState>("apply_tool_state", data);
    refused_as_invalid::<MembershipRequest>("set_tool_membership", data);
    refused_as_invalid::<StartTurnRequest>("start_turn", data);
    refused_as_invalid::<AppendSessionNodesRequest>("append_nodes", data);
    refused_as_invalid::<TraceRequest>("trace", data);
    refused_as_invalid::<SessionCreateRequest>("create", data);
    if let Ok(subject) = std::str::from_utf8(data) {
        if let Err(err) = Subjects::default().parse_session_op(subject) {
            assert_eq!(err.kind(), ErrorKind::InvalidRequest);
        }
        if let Ok(id) = sessionbus_api::ids::decode_id("session id", subject) {
            assert_eq!(sessionbus_api::ids::encode_id("session id", &id).as_deref(), Ok(subject));
        }
    }
});
