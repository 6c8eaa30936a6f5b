//! `sessionbus credentials`: mints what the deploy/ NATS configs read from the
//! servers' environment.
//!
//! - `server.env`: each user's nkey public key (`SESSIONBUS_<USER>_NKEY`), the route
//!   password and the route list with it (`SESSIONBUS_ROUTE_PASSWORD`,
//!   `SESSIONBUS_ROUTES`). Public keys are not secrets; the route password is.
//! - `<user>.nk`: each user's nkey seed, the user's only secret. Hand each file to its
//!   user only (`NATS_NKEY=<file>`); the servers never see seeds.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::connect::CliError;

/// The users of deploy/nats/accounts.conf.
pub const DEPLOY_USERS: [&str; 6] = ["admin", "worker", "app_a", "app_b", "tenant", "dashboard"];

/// Options of `credentials`.
#[derive(Args, Debug, Clone)]
pub struct CredentialsArgs {
    /// Where to write `server.env` and one `<user>.nk` seed file per user.
    #[arg(long, default_value = "deploy/nats/secrets")]
    pub out: PathBuf,
    /// The cluster's route addresses (host:port), comma separated.
    #[arg(long, default_value = "nats1:6222,nats2:6223,nats3:6224", value_delimiter = ',')]
    pub routes: Vec<String>,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

/// Minted credentials: the server environment and each user's seed.
#[derive(Debug)]
pub struct Minted {
    /// `NAME=value` lines for the servers' environment.
    pub server_env: Vec<(String, String)>,
    /// `(user, seed)` per user.
    pub seeds: Vec<(String, String)>,
}

/// Mints an nkey per user in `users` and a route password for `routes`.
pub fn mint(users: &[&str], routes: &[String]) -> Result<Minted, CliError> {
    let mut server_env = Vec::new();
    let mut seeds = Vec::new();
    for user in users {
        let pair = nkeys::KeyPair::new_user();
        let seed = pair.seed().map_err(|err| CliError::Other(format!("could not encode an nkey seed: {err}")))?;
        server_env.push((format!("SESSIONBUS_{}_NKEY", user.to_uppercase()), pair.public_key()));
        seeds.push(((*user).to_owned(), seed));
    }
    // Letters and digits only: the value is read by the server's config parser and
    // sits inside route URLs.
    let password = format!("r{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let route_list = routes
        .iter()
        .map(|route| format!("nats-route://route:{password}@{}", route.trim()))
        .collect::<Vec<_>>()
        .join(",");
    server_env.push(("SESSIONBUS_ROUTE_PASSWORD".to_owned(), password));
    server_env.push(("SESSIONBUS_ROUTES".to_owned(), format!("[{route_list}]")));
    Ok(Minted { server_env, seeds })
}

/// Writes `minted` into `dir` (`server.env`, `<user>.nk`, each readable by its owner only).
pub fn write(dir: &Path, minted: &Minted, force: bool) -> Result<(), CliError> {
    let io = |path: &Path, err: std::io::Error| CliError::Other(format!("could not write {}: {err}", path.display()));
    std::fs::create_dir_all(dir).map_err(|err| io(dir, err))?;
    let mut files = vec![(dir.join("server.env"), render_env(&minted.server_env))];
    files.extend(minted.seeds.iter().map(|(user, seed)| (dir.join(format!("{user}.nk")), format!("{seed}\n"))));
    if !force && let Some((existing, _)) = files.iter().find(|(path, _)| path.exists()) {
        return Err(CliError::Other(format!(
            "{} exists: pass --force to replace the credentials in {} (every user then needs its new seed)",
            existing.display(),
            dir.display()
        )));
    }
    for (path, text) in files {
        let mut file = secret_file(&path).map_err(|err| io(&path, err))?;
        file.write_all(text.as_bytes()).map_err(|err| io(&path, err))?;
    }
    Ok(())
}

fn secret_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

fn render_env(pairs: &[(String, String)]) -> String {
    let mut text = String::from("# sessionbus NATS server environment, minted by `sessionbus credentials`.\n");
    for (name, value) in pairs {
        text.push_str(&format!("{name}={value}\n"));
    }
    text
}

/// Runs `credentials`.
pub fn run(args: CredentialsArgs) -> Result<(), CliError> {
    let minted = mint(&DEPLOY_USERS, &args.routes)?;
    write(&args.out, &minted, args.force)?;
    let mut table = crate::output::table(["file", "for"]);
    table.add_row(vec![args.out.join("server.env").display().to_string(), "every nats-server (env_file)".to_owned()]);
    for (user, _) in &minted.seeds {
        table.add_row(vec![args.out.join(format!("{user}.nk")).display().to_string(), format!("{user} (NATS_NKEY)")]);
    }
    println!("credentials minted (keep the seeds and server.env secret)\n{table}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_gets_its_own_key_and_routes_carry_the_password() {
        let minted = mint(&DEPLOY_USERS, &["a:1".to_owned(), "b:2".to_owned()]).expect("mint");
        assert_eq!(minted.seeds.len(), DEPLOY_USERS.len());
        let env: std::collections::HashMap<_, _> = minted.server_env.iter().cloned().collect();
        for (user, seed) in &minted.seeds {
            let pair = nkeys::KeyPair::from_seed(seed).expect("a valid seed");
            assert_eq!(env[&format!("SESSIONBUS_{}_NKEY", user.to_uppercase())], pair.public_key());
            assert!(pair.public_key().starts_with('U'), "a user key");
        }
        let password = &env["SESSIONBUS_ROUTE_PASSWORD"];
        assert!(password.chars().all(|c| c.is_ascii_alphanumeric()) && password.len() > 40);
        assert_eq!(
            env["SESSIONBUS_ROUTES"],
            format!("[nats-route://route:{password}@a:1,nats-route://route:{password}@b:2]")
        );
    }
}
