//! The `nats` CLI's selected context, so a NATS user's existing setup just works: the
//! context named by `NATS_CONTEXT`, or else by `<config>/nats/context.txt`, read from
//! `<config>/nats/context/<name>.json` (`<config>` is `$XDG_CONFIG_HOME` or
//! `~/.config`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What sessionbus uses of a `nats` context (the names are the `nats` CLI's own).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct NatsContext {
    /// The context's name (its file name).
    #[serde(skip)]
    pub name: String,
    /// Server URL(s), comma separated.
    #[serde(default)]
    pub url: Option<String>,
    /// A credentials file.
    #[serde(default)]
    pub creds: Option<PathBuf>,
    /// An nkey seed file.
    #[serde(default)]
    pub nkey: Option<PathBuf>,
    /// User name (with `password`).
    #[serde(default)]
    pub user: Option<String>,
    /// Password (never logged).
    #[serde(default)]
    pub password: Option<String>,
    /// An authentication token (never logged).
    #[serde(default)]
    pub token: Option<String>,
    /// A client certificate (with `key`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The client certificate's key.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// A CA certificate to trust.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The reply inbox prefix.
    #[serde(default)]
    pub inbox_prefix: Option<String>,
}

/// Why a selected context could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The selected context's file is missing or unreadable.
    #[error(
        "the nats context `{name}` is selected but {path} cannot be read: {source}; select another with `nats context select`, or set NATS_URL"
    )]
    Unreadable {
        /// The context.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The selected context's file is not a context.
    #[error(
        "the nats context `{name}` ({path}) is not valid JSON: {source}; fix it with `nats context edit {name}`, or set NATS_URL"
    )]
    Invalid {
        /// The context.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// The `nats` CLI's configuration directory (`<config>/nats`), when a config dir exists.
pub fn nats_config_dir() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join("nats"))
}

/// The selected context under `dir`: `explicit` (from `NATS_CONTEXT`) or the name in
/// `dir/context.txt`; `None` when none is selected.
pub fn selected(dir: &Path, explicit: Option<&str>) -> Result<Option<NatsContext>, ContextError> {
    let name = match explicit.map(str::trim).filter(|name| !name.is_empty()) {
        Some(name) => name.to_owned(),
        None => match std::fs::read_to_string(dir.join("context.txt")) {
            Ok(name) if !name.trim().is_empty() => name.trim().to_owned(),
            _ => return Ok(None),
        },
    };
    let path = dir.join("context").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).map_err(|source| ContextError::Unreadable {
        name: name.clone(),
        path: path.clone(),
        source,
    })?;
    let mut context: NatsContext =
        serde_json::from_str(&text).map_err(|source| ContextError::Invalid { name: name.clone(), path, source })?;
    context.name = name;
    // The nats CLI writes unset fields as "".
    for field in
        [&mut context.url, &mut context.user, &mut context.password, &mut context.token, &mut context.inbox_prefix]
    {
        if field.as_deref().is_some_and(|value| value.trim().is_empty()) {
            *field = None;
        }
    }
    for field in [&mut context.creds, &mut context.nkey, &mut context.cert, &mut context.key, &mut context.ca] {
        if field.as_deref().is_some_and(|path| path.as_os_str().is_empty()) {
            *field = None;
        }
    }
    Ok(Some(context))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(selected: Option<&str>, contexts: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("context")).expect("mkdir");
        if let Some(name) = selected {
            std::fs::write(dir.path().join("context.txt"), name).expect("write");
        }
        for (name, json) in contexts {
            std::fs::write(dir.path().join("context").join(format!("{name}.json")), json).expect("write");
        }
        dir
    }

    #[test]
    fn the_selected_context_is_read_with_empty_fields_as_unset() {
        let json = r#"{"description":"","url":"nats://h:4333","creds":"","nkey":"/k.nk","user":"","password":"",
            "token":"","cert":"/c.pem","key":"/c.key","ca":"","nsc":"","jetstream_domain":"","inbox_prefix":"_I_me"}"#;
        let dir = dir_with(Some("dev\n"), &[("dev", json), ("other", r#"{"url":"nats://o:1"}"#)]);
        let context = selected(dir.path(), None).expect("readable").expect("selected");
        assert_eq!(context.name, "dev");
        assert_eq!(context.url.as_deref(), Some("nats://h:4333"));
        assert_eq!(context.nkey.as_deref(), Some(Path::new("/k.nk")));
        assert_eq!(
            (context.creds, context.user, context.password, context.token, context.ca),
            (None, None, None, None, None)
        );
        assert_eq!(context.cert.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(context.inbox_prefix.as_deref(), Some("_I_me"));
        let other = selected(dir.path(), Some("other")).expect("readable").expect("NATS_CONTEXT wins");
        assert_eq!(other.url.as_deref(), Some("nats://o:1"));
    }

    #[test]
    fn no_selection_is_no_context_and_a_broken_selection_is_an_error() {
        assert_eq!(selected(dir_with(None, &[]).path(), None).expect("none").map(|c| c.name), None);
        assert_eq!(selected(dir_with(Some("  "), &[]).path(), None).expect("none").map(|c| c.name), None);
        let missing = selected(dir_with(Some("gone"), &[]).path(), None).expect_err("missing file");
        assert!(missing.to_string().contains("`gone`") && missing.to_string().contains("NATS_URL"), "{missing}");
        let broken = selected(dir_with(Some("bad"), &[("bad", "{")]).path(), None).expect_err("invalid");
        assert!(matches!(broken, ContextError::Invalid { .. }), "{broken}");
    }
}
