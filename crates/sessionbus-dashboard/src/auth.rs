//! Who may read the dashboard: with a token configured, a request must carry it as
//! `Authorization: Bearer <token>`, a `sessionbus_token` cookie, or a `token` query
//! parameter (the link `sessionbus dashboard` prints; the page then keeps it in an
//! HttpOnly cookie so it never appears in the page's script).

/// The cookie that carries the token after the first visit.
pub const TOKEN_COOKIE: &str = "sessionbus_token";

/// What a request presented.
#[derive(Clone, Copy, Debug, Default)]
pub struct Presented<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `Cookie` header.
    pub cookie: Option<&'a str>,
    /// The query string.
    pub query: Option<&'a str>,
}

/// The token a request presented, if any (header first, then cookie, then query).
pub fn presented_token<'a>(presented: &Presented<'a>) -> Option<&'a str> {
    let bearer = presented.authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
    let cookie = presented.cookie.and_then(|c| {
        c.split(';').filter_map(|pair| pair.trim().split_once('=')).find(|(k, _)| *k == TOKEN_COOKIE).map(|(_, v)| v)
    });
    let query = presented.query.and_then(|q| {
        q.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == "token").map(|(_, v)| v)
    });
    bearer.or(cookie).or(query)
}

/// True when no token is configured, or the request presented exactly it (compared in
/// time independent of where they differ).
pub fn authorized(expected: Option<&str>, presented: &Presented<'_>) -> bool {
    let Some(expected) = expected else { return true };
    let Some(given) = presented_token(presented) else { return false };
    constant_time_eq(expected.as_bytes(), given.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_token_must_be_presented_exactly() {
        let p = |authorization, cookie, query| Presented { authorization, cookie, query };
        let table: &[(Option<&str>, Presented<'_>, bool)] = &[
            (None, p(None, None, None), true),
            (Some("s3"), p(None, None, None), false),
            (Some("s3"), p(Some("Bearer s3"), None, None), true),
            (Some("s3"), p(Some("Bearer s4"), None, None), false),
            (Some("s3"), p(Some("Basic s3"), None, None), false),
            (Some("s3"), p(None, Some("a=b; sessionbus_token=s3"), None), true),
            (Some("s3"), p(None, Some("sessionbus_token=s"), None), false),
            (Some("s3"), p(None, None, Some("x=1&token=s3")), true),
            (Some("s3"), p(None, None, Some("token=s3x")), false),
            (Some("s3"), p(None, None, Some("notoken=s3")), false),
        ];
        for (expected, presented, allowed) in table {
            assert_eq!(authorized(*expected, presented), *allowed, "{expected:?} {presented:?}");
        }
    }
}
