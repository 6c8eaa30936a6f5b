//! The stable-toolchain counterpart of the `fuzz/` target (which needs nightly): random
//! and mutated bytes through every request decoder and the subject parser never panic,
//! and every refusal is an `InvalidRequest`.

use proptest::prelude::*;
use sessionbus_api::{AppendSessionNodesRequest, ErrorKind, SessionCreateRequest, ToolState};
use sessionbus_nats::Subjects;
use sessionbus_nats::wire::{
    Empty, GraphPageRequest, MembershipRequest, StartTurnRequest, ToolCatalogRequest, TraceRequest, decode_request,
};

fn refused_as_invalid<T: serde::de::DeserializeOwned>(op: &str, data: &[u8]) -> Result<(), TestCaseError> {
    if let Err(err) = decode_request::<T>(op, data) {
        prop_assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    }
    Ok(())
}

fn every_decoder(data: &[u8]) -> Result<(), TestCaseError> {
    refused_as_invalid::<Empty>("snapshot", data)?;
    refused_as_invalid::<GraphPageRequest>("graph_page", data)?;
    refused_as_invalid::<ToolCatalogRequest>("tool_catalog", data)?;
    refused_as_invalid::<ToolState>("apply_tool_state", data)?;
    refused_as_invalid::<MembershipRequest>("set_tool_membership", data)?;
    refused_as_invalid::<StartTurnRequest>("start_turn", data)?;
    refused_as_invalid::<AppendSessionNodesRequest>("append_nodes", data)?;
    refused_as_invalid::<TraceRequest>("trace", data)?;
    refused_as_invalid::<SessionCreateRequest>("create", data)
}

/// Valid bodies to mutate: every lash fixture plus the bus's own request shapes.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(load_seeds)
}

fn load_seeds() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sessionbus-api/tests/fixtures/lash");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("fixtures")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    seeds.push(br#"{"after_seq": 3, "limit": 10}"#.to_vec());
    seeds.push(br#"{"tool_names": ["bash"], "present": true}"#.to_vec());
    seeds.push(br#"{"turn_id": "t1", "input": {"items": [{"type": "text", "text": "hi"}]}}"#.to_vec());
    seeds
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_a_decoder(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        every_decoder(&data)?;
    }

    #[test]
    fn mutated_valid_bodies_never_panic_a_decoder(seed in 0usize..64, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let seeds = seeds();
        let mut data = seeds[seed % seeds.len()].clone();
        for (at, byte) in flips {
            let len = data.len().max(1);
            if let Some(slot) = data.get_mut(at % len) {
                *slot = byte;
            }
        }
        data.truncate(cut % (data.len() + 1));
        every_decoder(&data)?;
    }

    #[test]
    fn random_subjects_never_panic_the_parser(subject in "\\PC{0,80}") {
        if let Err(err) = Subjects::default().parse_session_op(&subject) {
            prop_assert_eq!(err.kind(), ErrorKind::InvalidRequest);
        }
    }
}
