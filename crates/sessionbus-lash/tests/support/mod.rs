//! What the lash compatibility tests share: the lash fixtures kept in the repository, and
//! the check that lash's own type reads a JSON value and writes the same value back.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The lash fixtures (JSON written by lash's own serde code), kept beside the contract.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sessionbus-api/tests/fixtures/lash")
}

/// The text of fixture `name`.
pub fn fixture_text(name: &str) -> String {
    let path = fixture_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

/// Fixture `name` as a JSON value.
pub fn fixture(name: &str) -> Value {
    serde_json::from_str(&fixture_text(name)).unwrap_or_else(|err| panic!("{name} is not JSON: {err}"))
}

/// Disagreements with lash found so far; a test reports them all at once.
#[derive(Default)]
pub struct Findings(Vec<String>);

impl Findings {
    /// Checks that lash's `T` reads `value` and writes it back as the same JSON value.
    pub fn lash_reads<T: DeserializeOwned + Serialize>(&mut self, what: &str, value: &Value) {
        if let Err(problem) = lash_round_trip::<T>(value) {
            self.0.push(format!("{what} ({}): {problem}", std::any::type_name::<T>()));
        }
    }

    /// Records a disagreement found another way.
    pub fn note(&mut self, finding: String) {
        self.0.push(finding);
    }

    /// Fails with every disagreement when there is any.
    pub fn assert_none(self) {
        assert!(self.0.is_empty(), "{} disagreement(s) with lash:\n- {}", self.0.len(), self.0.join("\n- "));
    }
}

/// `value` -> lash's `T` -> JSON: the JSON written is `value` (compared as JSON values).
pub fn lash_round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|err| format!("lash refuses it: {err}"))?;
    let written = serde_json::to_value(&typed).map_err(|err| format!("lash cannot write it back: {err}"))?;
    if &written == value {
        Ok(())
    } else {
        Err(format!("lash writes it back differently: {}", first_difference("", value, &written)))
    }
}

/// The first place where `ours` and `lash` differ, as a JSON pointer and the two values.
fn first_difference(path: &str, ours: &Value, lash: &Value) -> String {
    match (ours, lash) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()) {
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) if x == y => continue,
                    (Some(x), Some(y)) => return first_difference(&format!("{path}/{key}"), x, y),
                    (Some(x), None) => return format!("{path}/{key}: ours has {x}, lash drops it"),
                    (None, Some(y)) => return format!("{path}/{key}: lash adds {y}"),
                    (None, None) => continue,
                }
            }
            format!("{path}: equal objects")
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if x != y {
                    return first_difference(&format!("{path}/{i}"), x, y);
                }
            }
            format!("{path}: equal arrays")
        }
        _ => format!("{path}: ours {ours}, lash {lash}"),
    }
}
