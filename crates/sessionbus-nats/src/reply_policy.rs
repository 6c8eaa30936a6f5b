//! Which reply subjects a worker answers.
//!
//! A request's reply subject is written by the caller, and the server lets a worker
//! publish to it. Answering any reply subject would let a caller aim the worker's
//! reply (or a turn's progress messages) at `$JS.API.STREAM.DELETE.<stream>`, at a
//! stream subject, a KV key or an events subject. A worker therefore answers only
//! reply subjects under an inbox prefix, and drops the request otherwise, before it
//! does anything.
//!
//! Allowed by default: the first token `_INBOX` (the default inbox of every NATS
//! client), a first token starting with `_INBOX_` (custom inbox prefixes such as
//! `_INBOX_app_a`), and `_R_` (the reply subjects the server makes for requests that
//! cross accounts through a service import). More prefixes can be configured.

/// The reply subjects a worker answers. A pure decision, no I/O.
///
/// ```
/// use sessionbus_nats::reply_policy::ReplyPolicy;
///
/// let policy = ReplyPolicy::default();
/// assert!(policy.allows("_INBOX.abc.1"));
/// assert!(policy.allows("_INBOX_app_a.abc.1"));
/// assert!(policy.allows("_R_.x1y2.z3"));
/// assert!(!policy.allows("$JS.API.STREAM.DELETE.SESSIONBUS_STATE"));
/// assert!(!policy.allows("sessionbus.v1.state.victim.meta"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplyPolicy {
    extra_prefixes: Vec<String>,
}

impl ReplyPolicy {
    /// The default policy plus `prefixes` (each a subject prefix; a trailing `.` is
    /// added when missing, so `my_inbox` allows `my_inbox.<anything>`).
    pub fn with_prefixes(prefixes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let extra_prefixes = prefixes
            .into_iter()
            .map(Into::into)
            .filter(|prefix| !prefix.trim_matches('.').is_empty())
            .map(|prefix| if prefix.ends_with('.') { prefix } else { format!("{prefix}.") })
            .collect();
        Self { extra_prefixes }
    }

    /// True when a reply to `reply` may be sent: it is a well-formed literal subject
    /// (no wildcard, no empty token, no whitespace) with at least one token after an
    /// allowed inbox prefix.
    pub fn allows(&self, reply: &str) -> bool {
        if !is_literal_subject(reply) {
            return false;
        }
        let Some((first, rest)) = reply.split_once('.') else { return false };
        let default_inbox = first == "_INBOX" || first == "_R_" || (first.starts_with("_INBOX_") && first.len() > 7);
        (default_inbox && !rest.is_empty())
            || self.extra_prefixes.iter().any(|prefix| reply.len() > prefix.len() && reply.starts_with(prefix.as_str()))
    }

    /// The part of a refused reply subject that names who sent it (its first two
    /// tokens at most), for logging once per sender.
    pub fn sender_key(reply: &str) -> &str {
        let mut dots = reply.match_indices('.').map(|(at, _)| at);
        match (dots.next(), dots.next()) {
            (Some(_), Some(second)) => &reply[..second],
            _ => reply,
        }
    }
}

fn is_literal_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject
            .split('.')
            .all(|token| !token.is_empty() && token != "*" && token != ">" && !token.chars().any(|c| c.is_whitespace()))
}

#[cfg(test)]
mod tests {
    use super::ReplyPolicy;

    #[test]
    fn only_inbox_prefixes_are_answered() {
        let default = ReplyPolicy::default();
        let custom = ReplyPolicy::with_prefixes(["replies.team_a"]);
        // (reply subject, default policy, with `replies.team_a` added)
        let table = [
            ("_INBOX.abc", true, true),
            ("_INBOX.abc.123", true, true),
            ("_INBOX_client.abc.1", true, true),
            ("_INBOX_app_a.x", true, true),
            ("_R_.abc.def", true, true),
            ("replies.team_a.1", false, true),
            ("replies.team_ab.1", false, false),
            ("replies.team_a", false, false),
            ("_INBOX", false, false),
            ("_INBOX.", false, false),
            ("_INBOX_", false, false),
            ("_INBOX_.x", false, false),
            ("_INBOXES.x", false, false),
            ("_R_", false, false),
            ("_INBOX.*", false, false),
            ("_INBOX.>", false, false),
            ("_INBOX..x", false, false),
            ("_INBOX.a b", false, false),
            ("$JS.API.STREAM.DELETE.SESSIONBUS_STATE", false, false),
            ("$JS.API.STREAM.PURGE.KV_SESSIONBUS_TOOLS", false, false),
            ("sessionbus.v1.state.victim.meta", false, false),
            ("$KV.SESSIONBUS_TOOLS.victim", false, false),
            ("sessionbus.v1.events.victim.tools", false, false),
            ("$SRV.PING", false, false),
            ("", false, false),
        ];
        for (reply, by_default, with_custom) in table {
            assert_eq!(default.allows(reply), by_default, "default policy, reply {reply:?}");
            assert_eq!(custom.allows(reply), with_custom, "with replies.team_a, reply {reply:?}");
        }
    }

    #[test]
    fn an_empty_extra_prefix_allows_nothing_more() {
        let policy = ReplyPolicy::with_prefixes(["", ".", "sessionbus.v1.state."]);
        assert!(!policy.allows("x.y"));
        assert!(policy.allows("sessionbus.v1.state.x"), "a configured prefix is the operator's choice");
        assert_eq!(policy, ReplyPolicy::with_prefixes(["sessionbus.v1.state"]));
    }

    #[test]
    fn refused_replies_are_keyed_by_their_first_two_tokens() {
        assert_eq!(ReplyPolicy::sender_key("$JS.API.STREAM.DELETE.X"), "$JS.API");
        assert_eq!(ReplyPolicy::sender_key("a.b"), "a.b");
        assert_eq!(ReplyPolicy::sender_key("single"), "single");
    }
}
