//! The `lash-on-nats` command line, read by a pure function.

use std::time::Duration;

use lash_core::LeaseTimings;

/// The usage line the binary prints with an argument error.
pub const USAGE: &str = "usage: lash-on-nats --url <nats url> --script <script.json> [--label <name>] \
                         [--namespace <prefix>] [--lease-ttl-ms <ms> --lease-renew-ms <ms>]";

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerArgs {
    /// `--label` (default `lash-on-nats`).
    pub label: String,
    /// `--url`.
    pub url: String,
    /// `--namespace` (default empty: the deployment's sessions).
    pub namespace: String,
    /// `--script`: the scripted model's answers.
    pub script: String,
    /// `--lease-ttl-ms` and `--lease-renew-ms` (lash's defaults without them).
    pub lease_timings: LeaseTimings,
}

/// Why the command line cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// A flag this binary does not have.
    #[error("unknown argument `{0}`; {USAGE}")]
    Unknown(String),
    /// A flag without its value.
    #[error("`{0}` needs a value; {USAGE}")]
    MissingValue(String),
    /// A required flag is absent.
    #[error("`{0}` is required; {USAGE}")]
    Required(&'static str),
    /// A number that is not one.
    #[error("`{flag}` needs a number of milliseconds, got `{value}`")]
    NotANumber {
        /// The flag.
        flag: String,
        /// Its value.
        value: String,
    },
    /// Lease timings lash refuses (one given without the other, or a TTL under 3 renew
    /// intervals).
    #[error("lash refuses these lease timings: {0}; give both, with the TTL at least 3x the renew interval")]
    LeaseTimings(String),
}

impl ArgsError {
    /// A stable name of the error's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unknown(_) => "unknown",
            Self::MissingValue(_) => "missing_value",
            Self::Required(_) => "required",
            Self::NotANumber { .. } => "not_a_number",
            Self::LeaseTimings(_) => "lease_timings",
        }
    }
}

impl PeerArgs {
    /// Reads the arguments after the program name.
    pub fn parse(args: &[String]) -> Result<Self, ArgsError> {
        let (mut label, mut url, mut namespace, mut script) = (None, None, None, None);
        let (mut ttl, mut renew) = (None, None);
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().cloned().ok_or_else(|| ArgsError::MissingValue(flag.clone()));
            match flag.as_str() {
                "--label" => label = Some(value()?),
                "--url" => url = Some(value()?),
                "--namespace" => namespace = Some(value()?),
                "--script" => script = Some(value()?),
                "--lease-ttl-ms" => ttl = Some(millis(flag, value()?)?),
                "--lease-renew-ms" => renew = Some(millis(flag, value()?)?),
                other => return Err(ArgsError::Unknown(other.to_owned())),
            }
        }
        let lease_timings = match (ttl, renew) {
            (None, None) => LeaseTimings::default(),
            (Some(ttl), Some(renew)) => {
                LeaseTimings::new(ttl, renew).map_err(|err| ArgsError::LeaseTimings(err.to_string()))?
            }
            _ => return Err(ArgsError::LeaseTimings("only one of --lease-ttl-ms and --lease-renew-ms".into())),
        };
        Ok(Self {
            label: label.unwrap_or_else(|| "lash-on-nats".to_owned()),
            url: url.ok_or(ArgsError::Required("--url"))?,
            namespace: namespace.unwrap_or_default(),
            script: script.ok_or(ArgsError::Required("--script"))?,
            lease_timings,
        })
    }
}

fn millis(flag: &str, value: String) -> Result<Duration, ArgsError> {
    value.parse().map(Duration::from_millis).map_err(|_| ArgsError::NotANumber { flag: flag.to_owned(), value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<PeerArgs, ArgsError> {
        PeerArgs::parse(&line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn a_full_command_line_reads_into_its_fields() {
        let args = parse(
            "--label a --url nats://x:1 --namespace n- --script s.json --lease-ttl-ms 3000 --lease-renew-ms 1000",
        )
        .unwrap_or_else(|err| panic!("{err}"));
        let timings = LeaseTimings::new(Duration::from_secs(3), Duration::from_secs(1)).ok();
        assert_eq!(
            (
                args.label.as_str(),
                args.url.as_str(),
                args.namespace.as_str(),
                args.script.as_str(),
                Some(args.lease_timings)
            ),
            ("a", "nats://x:1", "n-", "s.json", timings)
        );
        let defaults = parse("--url u --script s").unwrap_or_else(|err| panic!("{err}"));
        assert_eq!((defaults.label.as_str(), defaults.namespace.as_str()), ("lash-on-nats", ""));
        assert_eq!(defaults.lease_timings, LeaseTimings::default());
    }

    #[test]
    fn a_wrong_command_line_says_what_is_wrong() {
        let rows = [
            ("--script s", "required"),
            ("--url u", "required"),
            ("--url u --script s --fast", "unknown"),
            ("--url u --script", "missing_value"),
            ("--url u --script s --lease-ttl-ms soon --lease-renew-ms 1", "not_a_number"),
            ("--url u --script s --lease-ttl-ms 3000", "lease_timings"),
            ("--url u --script s --lease-ttl-ms 1000 --lease-renew-ms 1000", "lease_timings"),
        ];
        for (line, kind) in rows {
            assert_eq!(parse(line).map_err(|err| err.kind()), Err(kind), "{line}");
        }
    }
}
