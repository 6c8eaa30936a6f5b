//! The stable-toolchain counterpart of the `fuzz/` target (which needs nightly): random
//! bytes, byte-level edits of valid bodies (overwrite, insert, delete, duplicate, with
//! JSON-significant bytes) and truncations, through every request decoder, and random
//! subjects through the subject parser: no panic, and every refusal is an
//! `InvalidRequest`.

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

/// Bytes a mutation writes: JSON's structural characters, quotes and escapes, digits,
/// letters of `true`/`false`/`null`, whitespace, a control character and a non-UTF-8
/// byte, so most mutations keep the body JSON-like and reach the typed decoders.
const MUTATION_BYTES: &[u8] = b"{}[]:,\"\\0123456789-+.eEtrufalsn \n\x01\xff";

/// One edit of a body: `(kind, position, byte)`.
type Edit = (u8, usize, usize);

/// Applies byte-level edits to `data`: overwrite, insert, delete, or duplicate a short
/// span (by `kind % 4`), at `position % len`, with `MUTATION_BYTES[byte % ..]`. The
/// length changes by a few bytes at most: the body is mutated, not cut.
fn mutate(mut data: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for &(kind, position, byte) in edits {
        let byte = MUTATION_BYTES[byte % MUTATION_BYTES.len()];
        let at = position % (data.len() + 1);
        match kind % 4 {
            0 if at < data.len() => data[at] = byte,
            1 => data.insert(at, byte),
            2 if at < data.len() => {
                data.remove(at);
            }
            3 => {
                let span: Vec<u8> = data[at..(at + 8).min(data.len())].to_vec();
                data.splice(at..at, span);
            }
            _ => data.push(byte),
        }
    }
    data
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_a_decoder(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        every_decoder(&data)?;
    }

    #[test]
    fn mutated_valid_bodies_never_panic_a_decoder(seed in 0usize..64, edits in edits()) {
        let seeds = seeds();
        let data = mutate(seeds[seed % seeds.len()].clone(), &edits);
        every_decoder(&data)?;
    }

    #[test]
    fn truncated_valid_bodies_never_panic_a_decoder(seed in 0usize..64, cut in any::<usize>()) {
        let seeds = seeds();
        let mut data = seeds[seed % seeds.len()].clone();
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

/// The mutations reach past the JSON parser: over 2,000 mutated bodies (a fixed
/// xorshift sequence), most keep their length within a few bytes, many are still valid
/// JSON (so the typed decoders see them), and the mutated bodies differ from their
/// seeds by edits, not by truncation.
#[test]
fn mutations_edit_bytes_and_many_stay_json() {
    let seeds = seeds();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut still_json, mut same_length_within_8, mut changed) = (0, 0, 0);
    let total = 2000;
    for _ in 0..total {
        let seed = &seeds[next() as usize % seeds.len()];
        let edits: Vec<Edit> = (0..1 + next() % 5).map(|_| (next() as u8, next() as usize, next() as usize)).collect();
        let data = mutate(seed.clone(), &edits);
        changed += usize::from(data != *seed);
        same_length_within_8 += usize::from(data.len().abs_diff(seed.len()) <= 8 * edits.len());
        still_json += usize::from(serde_json::from_slice::<serde_json::Value>(&data).is_ok());
        every_decoder(&data).expect("no panic, every refusal an InvalidRequest");
    }
    println!("mutations: {changed} of {total} bodies changed, {still_json} still JSON");
    assert!(changed * 10 >= total * 9, "mutations left {} of {total} bodies unchanged", total - changed);
    assert_eq!(same_length_within_8, total, "a mutation cut a body instead of editing it");
    assert!(still_json * 10 >= total, "fewer than 10% of mutated bodies are JSON ({still_json} of {total})");
}
