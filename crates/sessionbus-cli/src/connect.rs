//! How every command connects: `NATS_URL`, a credentials file, user/password, TLS.

use std::path::PathBuf;

use clap::Args;

/// Connection options shared by every command.
#[derive(Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// The NATS server(s) to use, comma separated. `up` and `demo` start their own
    /// server when this is not set.
    #[arg(long, env = "NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// A NATS credentials file (JWT + NKey seed).
    #[arg(long, env = "NATS_CREDS", global = true)]
    pub creds: Option<PathBuf>,
    /// A file holding this user's nkey seed (`sessionbus credentials` mints them).
    #[arg(long, env = "NATS_NKEY", global = true)]
    pub nkey: Option<PathBuf>,
    /// User name, with --password.
    #[arg(long, env = "NATS_USER", global = true)]
    pub user: Option<String>,
    /// Password, with --user (never logged).
    #[arg(long, env = "NATS_PASSWORD", global = true, hide_env_values = true)]
    pub password: Option<String>,
    /// Inbox prefix for replies (clients under the deploy/ permissions use their own).
    #[arg(long, env = "NATS_INBOX_PREFIX", global = true)]
    pub inbox_prefix: Option<String>,
    /// Require TLS.
    #[arg(long, global = true)]
    pub tls: bool,
    /// The subject prefix of the bus.
    #[arg(long, env = "SESSIONBUS_PREFIX", default_value = sessionbus_nats::DEFAULT_PREFIX, global = true)]
    pub prefix: String,
}

/// Errors of the CLI, with what to do about them.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No server to talk to (`url` has any credentials removed).
    #[error("could not connect to NATS at {url}: {source}. Is a server running? `sessionbus up` starts one.")]
    Connect { url: String, source: async_nats::ConnectError },
    /// A bus call failed.
    #[error("{0}")]
    Bus(#[from] sessionbus_api::PluginError),
    /// A local nats-server or worker process could not be started (the message says
    /// what to install or check).
    #[error(transparent)]
    Launch(#[from] sessionbus_launch::LaunchError),
    /// Anything else, already explained.
    #[error("{0}")]
    Other(String),
}

impl ConnectionArgs {
    /// The URL to use, when one is configured.
    pub fn url(&self) -> Option<&str> {
        self.nats_url.as_deref().filter(|url| !url.trim().is_empty())
    }

    /// Connects to `url` with the configured credentials.
    pub async fn connect_to(&self, url: &str, name: &str) -> Result<async_nats::Client, CliError> {
        let mut options = async_nats::ConnectOptions::new().name(name).max_reconnects(None);
        if let Some(creds) = &self.creds {
            options = options.credentials_file(creds).await.map_err(|err| {
                CliError::Other(format!("could not read the credentials file {}: {err}", creds.display()))
            })?;
        }
        if let Some(path) = &self.nkey {
            let seed = std::fs::read_to_string(path).map_err(|err| {
                CliError::Other(format!("could not read the nkey seed file {}: {err}", path.display()))
            })?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix.clone());
        }
        if self.tls {
            options = options.require_tls(true);
        }
        let servers = url
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| part.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| CliError::Other(format!("NATS_URL `{}` is not a valid server list: {err}", redact(url))))?;
        let connect = options.connect(servers.as_slice());
        match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(source)) => Err(CliError::Connect { url: redact(url), source }),
            Err(_) => Err(CliError::Other(format!(
                "could not connect to NATS at {} within 10 s. Is a server running? `sessionbus up` starts one.",
                redact(url)
            ))),
        }
    }

    /// Connects to NATS_URL (required).
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, CliError> {
        let url = self.url().ok_or_else(|| {
            CliError::Other(
                "NATS_URL is not set: point it at a server (e.g. nats://127.0.0.1:4222), or run `sessionbus up`".into(),
            )
        })?;
        self.connect_to(url, name).await
    }

    /// The subjects of the bus.
    pub fn subjects(&self) -> sessionbus_nats::Subjects {
        sessionbus_nats::Subjects::new(self.prefix.clone())
    }
}

/// `url` with any `user:password@` removed, for messages and logs.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|server| match (server.find("://"), server.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &server[..scheme], &server[at + 1..]),
            (None, Some(at)) => format!("***@{}", &server[at + 1..]),
            _ => server.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(redact("nats://u:secret@h:4222,nats://h2:4222"), "nats://***@h:4222,nats://h2:4222");
        assert_eq!(redact("u:secret@h:4222"), "***@h:4222");
        assert_eq!(redact("nats://h:4222"), "nats://h:4222");
    }
}
