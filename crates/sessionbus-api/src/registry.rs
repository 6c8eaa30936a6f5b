//! The session registry: a paged list of sessions in creation order, filtered by
//! status and parent, for operators and dashboards.
//!
//! Not part of the lash contract: [`SessionRegistryService`] is the bus's own fourth
//! service, with a default body that refuses, so a host that keeps no registry still
//! serves the three lash traits.

use serde::{Deserialize, Serialize};

use crate::PluginError;

/// The most sessions one page holds; a larger [`SessionListQuery::limit`] is cut to it.
pub const MAX_LIST_LIMIT: u32 = 1000;
/// The page size when a query asks for 0.
pub const DEFAULT_LIST_LIMIT: u32 = 50;

/// Whether a session still takes turns and appends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Takes turns and appends.
    Open,
    /// Closed: refuses turns and appends.
    Closed,
}

impl SessionStatus {
    /// `open` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Open => "open",
            SessionStatus::Closed => "closed",
        }
    }
}

impl std::fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SessionStatus {
    type Err = PluginError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "open" => Ok(SessionStatus::Open),
            "closed" => Ok(SessionStatus::Closed),
            other => Err(PluginError::InvalidRequest(format!("unknown session status `{other}`: use open or closed"))),
        }
    }
}

/// One page request of the registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionListQuery {
    /// The most sessions in the page (0 means [`DEFAULT_LIST_LIMIT`]; at most
    /// [`MAX_LIST_LIMIT`]).
    #[serde(default)]
    pub limit: u32,
    /// Start after this cursor (a previous page's [`SessionListPage::next_after`]);
    /// `None` for the first page. Cursors are opaque and host-specific.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Only sessions with this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SessionStatus>,
    /// Only children of this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

impl SessionListQuery {
    /// The first page of at most `limit` sessions, unfiltered.
    pub fn first(limit: u32) -> Self {
        Self { limit, ..Self::default() }
    }

    /// The page size this query gets: `limit`, 0 read as the default, cut to the maximum.
    pub fn effective_limit(&self) -> usize {
        let limit = if self.limit == 0 { DEFAULT_LIST_LIMIT } else { self.limit.min(MAX_LIST_LIMIT) };
        limit as usize
    }

    /// The creation sequence this page starts after (0 for the first page): the
    /// cursors of sessionbus's hosts are decimal creation sequences.
    pub fn after_sequence(&self) -> Result<u64, PluginError> {
        sequence_cursor(self.after.as_deref(), "session list")
    }

    /// True when `summary` passes this query's filters (status and parent).
    pub fn matches(&self, summary: &SessionSummary) -> bool {
        self.status.is_none_or(|status| summary.status == status)
            && self.parent.as_deref().is_none_or(|parent| summary.parent_session_id.as_deref() == Some(parent))
    }
}

/// The sequence a `what` page starts after: 0 without a cursor, else the cursor read
/// as a decimal sequence (`InvalidRequest` when it is not one).
pub(crate) fn sequence_cursor(cursor: Option<&str>, what: &str) -> Result<u64, PluginError> {
    match cursor {
        None => Ok(0),
        Some(cursor) => cursor.parse().map_err(|_| {
            PluginError::InvalidRequest(format!(
                "`{cursor}` is not a {what} cursor: pass the next_after of the page before"
            ))
        }),
    }
}

/// One session as the registry lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The session.
    pub session_id: String,
    /// The parent, for a child session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_session_id: Option<String>,
    /// Open or closed.
    pub status: SessionStatus,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When anything of the session last changed (RFC 3339): create, append, turn,
    /// lease renewal, close.
    pub last_activity: String,
    /// Turns committed.
    pub turn_index: u64,
    /// Tokens used by committed turns (input + output).
    pub tokens: u64,
    /// True while a turn runs (its lease is held).
    #[serde(default)]
    pub turn_running: bool,
}

/// One page of the registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionListPage {
    /// Sessions in creation order, oldest first. A page may hold fewer than the limit
    /// (a host reads a bounded part of its index per page) and still have a next page.
    pub sessions: Vec<SessionSummary>,
    /// The cursor of the next page; `None` when no session after this page matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// The session registry.
#[async_trait::async_trait]
pub trait SessionRegistryService: Send + Sync {
    /// One page of sessions in creation order. Following `next_after` until it is
    /// `None` lists every session matching the filters once, oldest first.
    async fn list_sessions(&self, _query: &SessionListQuery) -> Result<SessionListPage, PluginError> {
        Err(PluginError::Session("the session registry is unavailable in this runtime".to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(status: SessionStatus, parent: Option<&str>) -> SessionSummary {
        SessionSummary {
            session_id: "s".into(),
            parent_session_id: parent.map(str::to_owned),
            status,
            created_at: String::new(),
            last_activity: String::new(),
            turn_index: 0,
            tokens: 0,
            turn_running: false,
        }
    }

    #[test]
    fn filters_match_status_and_parent() {
        let open_root = summary(SessionStatus::Open, None);
        let closed_child = summary(SessionStatus::Closed, Some("p"));
        let cases = [
            (SessionListQuery::default(), [true, true]),
            (SessionListQuery { status: Some(SessionStatus::Open), ..Default::default() }, [true, false]),
            (SessionListQuery { status: Some(SessionStatus::Closed), ..Default::default() }, [false, true]),
            (SessionListQuery { parent: Some("p".into()), ..Default::default() }, [false, true]),
            (SessionListQuery { parent: Some("q".into()), ..Default::default() }, [false, false]),
            (
                SessionListQuery { parent: Some("p".into()), status: Some(SessionStatus::Open), ..Default::default() },
                [false, false],
            ),
        ];
        for (query, expected) in cases {
            assert_eq!([query.matches(&open_root), query.matches(&closed_child)], expected, "{query:?}");
        }
    }

    #[test]
    fn limits_default_and_are_capped() {
        for (limit, expected) in [(0, 50), (1, 1), (999, 999), (1000, 1000), (5000, 1000)] {
            assert_eq!(SessionListQuery::first(limit).effective_limit(), expected, "{limit}");
        }
    }

    #[test]
    fn cursors_are_creation_sequences() {
        let after = |cursor: Option<&str>| SessionListQuery { after: cursor.map(str::to_owned), ..Default::default() };
        assert_eq!(after(None).after_sequence().expect("first page"), 0);
        assert_eq!(after(Some("42")).after_sequence().expect("a cursor"), 42);
        for bad in ["", "-1", "x", "1.5"] {
            let err = after(Some(bad)).after_sequence().expect_err(bad);
            assert_eq!(err.kind(), crate::ErrorKind::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn statuses_parse_and_print() {
        for status in [SessionStatus::Open, SessionStatus::Closed] {
            assert_eq!(status.as_str().parse::<SessionStatus>().expect("parses"), status);
            assert_eq!(serde_json::to_string(&status).expect("json"), format!("\"{status}\""));
        }
        assert!("running".parse::<SessionStatus>().is_err());
    }
}
