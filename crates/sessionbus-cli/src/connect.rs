//! How every command connects: `NATS_URL`, a credentials file, user/password, TLS;
//! without `NATS_URL`, the `nats` CLI's selected context, and else
//! [`DEFAULT_URL`] (as the `nats` CLI does).

use std::path::PathBuf;

use clap::Args;

use crate::context::{self, NatsContext};

/// The server used when neither NATS_URL nor a `nats` context names one.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

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
    /// A client certificate for TLS (with --tls-key).
    #[arg(long, env = "NATS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long, env = "NATS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// A CA certificate to trust for TLS.
    #[arg(long, env = "NATS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// An authentication token (never logged; also read from a `nats` context).
    #[arg(long, env = "NATS_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The `nats` CLI context to use when NATS_URL is not set (default: the one
    /// `nats context select` chose).
    #[arg(long, env = "NATS_CONTEXT", global = true)]
    pub context: Option<String>,
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
    /// `--executor lash` on a binary built without lash.
    #[cfg(not(feature = "lash"))]
    #[error(
        "this sessionbus was built without lash: rebuild with --features lash (cargo build -p sessionbus-cli --features lash)"
    )]
    LashNotBuilt,
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
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if self.tls || self.tls_ca.is_some() || self.tls_cert.is_some() {
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

    /// Connects to NATS_URL; without it, to the selected `nats` context's server with
    /// its credentials, and else to [`DEFAULT_URL`].
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, CliError> {
        let resolved = self.resolved()?;
        resolved.connect_to(resolved.url().unwrap_or(DEFAULT_URL), name).await
    }

    /// These options, completed from the selected `nats` context when NATS_URL is not
    /// set (options given here win over the context's).
    fn resolved(&self) -> Result<ConnectionArgs, CliError> {
        if self.url().is_some() {
            return Ok(self.clone());
        }
        let Some(dir) = context::nats_config_dir() else { return Ok(self.clone()) };
        match context::selected(&dir, self.context.as_deref()).map_err(|err| CliError::Other(err.to_string()))? {
            Some(context) => Ok(self.completed_by(context)),
            None => Ok(self.clone()),
        }
    }

    /// These options with what they leave unset taken from `context`.
    fn completed_by(&self, context: NatsContext) -> ConnectionArgs {
        tracing::debug!(context = %context.name, "using the selected nats context");
        let mut args = self.clone();
        args.nats_url = args.url().map(str::to_owned).or(context.url);
        args.creds = args.creds.or(context.creds);
        args.nkey = args.nkey.or(context.nkey);
        if args.user.is_none() && args.password.is_none() {
            (args.user, args.password) = (context.user, context.password);
        }
        args.token = args.token.or(context.token);
        args.tls_cert = args.tls_cert.or(context.cert);
        args.tls_key = args.tls_key.or(context.key);
        args.tls_ca = args.tls_ca.or(context.ca);
        args.inbox_prefix = args.inbox_prefix.or(context.inbox_prefix);
        args
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
