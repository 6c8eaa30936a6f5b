//! [`Postgres`]: a throw-away PostgreSQL server from the machine's packages (Debian's
//! `postgresql`: `scripts/install-postgresql`), on a free loopback port with its data
//! directory in a temporary directory, stopped and deleted on drop.
//!
//! PostgreSQL refuses to run as root: as root, `initdb` and `pg_ctl` run as the
//! `postgres` user (`runuser`), which owns the data directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::BenchError;

/// How long `pg_ctl start` waits for the server to accept connections, in seconds.
const START_TIMEOUT_SECS: &str = "60";
/// The account that runs the server when the bench runs as root.
const SERVICE_USER: &str = "postgres";

/// A running PostgreSQL server with a trust-authenticated `postgres` superuser.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_service_user: bool,
    // Deleted once `Drop::drop` has stopped the server.
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Creates a cluster in a new temporary directory and starts it on a free loopback
    /// port with `settings` (`name=value` server settings, passed as `-c`).
    pub fn start(settings: &[(&str, &str)]) -> Result<Self, BenchError> {
        let bin = find_bin_dir()?;
        let as_service_user = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("sessionbus-bench-pg-")
            .tempdir()
            .map_err(|err| BenchError::io("create the PostgreSQL directory", err))?;
        let data = dir.path().join("data");
        if as_service_user {
            chown_to_service_user(dir.path())?;
        }
        let port = sessionbus_launch::free_port().map_err(|err| BenchError::Postgres(err.to_string()))?;
        let server = Self { bin, data, port, as_service_user, dir };
        server.run("initdb", &["-D", path_str(&server.data)?, "-U", "postgres", "--auth=trust", "--no-sync"])?;
        let mut options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            path_str(server.socket_dir())?
        );
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        let log = server.log_path();
        server.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&server.data)?,
                "-l",
                path_str(&log)?,
                "-o",
                &options,
                "-w",
                "-t",
                START_TIMEOUT_SECS,
                "start",
            ],
        )?;
        Ok(server)
    }

    /// The connection URL (`postgres://postgres@127.0.0.1:<port>/postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.socket_dir().join("postgres.log")
    }

    fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `program` of the PostgreSQL installation (as the service user when root).
    fn run(&self, program: &str, args: &[&str]) -> Result<(), BenchError> {
        let path = self.bin.join(program);
        let mut command = if self.as_service_user {
            let mut command = Command::new("runuser");
            command.args(["-u", SERVICE_USER, "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        let output =
            command.args(args).output().map_err(|err| BenchError::io(&format!("run {}", path.display()), err))?;
        if output.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        Err(BenchError::Postgres(format!(
            "{program} {} failed ({}): {}{}\nserver log:\n{log}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Ok(data) = path_str(&self.data)
            && let Err(err) = self.run("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"])
        {
            eprintln!("stopping the bench's PostgreSQL failed: {err}");
        }
    }
}

/// The directory of `initdb` and `pg_ctl`: `$PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian keeps them off `PATH`).
fn find_bin_dir() -> Result<PathBuf, BenchError> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let versions = std::fs::read_dir("/usr/lib/postgresql").map_err(|_| not_installed())?;
    versions
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse::<u32>().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
        .ok_or_else(not_installed)
}

fn not_installed() -> BenchError {
    BenchError::Postgres(
        "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/initdb): run scripts/install-postgresql, \
         or set PG_BIN to the directory of initdb and pg_ctl, or leave postgres out of --stores"
            .into(),
    )
}

/// True when the process runs as uid 0 (read from `/proc/self/status`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn chown_to_service_user(dir: &Path) -> Result<(), BenchError> {
    let status = Command::new("chown")
        .arg(format!("{SERVICE_USER}:"))
        .arg(dir)
        .status()
        .map_err(|err| BenchError::io("run chown", err))?;
    if status.success() {
        Ok(())
    } else {
        Err(BenchError::Postgres(format!(
            "chown {SERVICE_USER}: {} failed ({status}): PostgreSQL refuses to run as root, and the `{SERVICE_USER}` \
             user (created by Debian's postgresql package) must own its data directory",
            dir.display()
        )))
    }
}

fn path_str(path: &Path) -> Result<&str, BenchError> {
    path.to_str().ok_or_else(|| BenchError::Postgres(format!("the path {} is not UTF-8", path.display())))
}
