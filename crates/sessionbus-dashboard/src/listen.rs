//! Whether the dashboard may listen where it was asked to (pure).

use std::net::SocketAddr;

use crate::error::DashboardError;

/// A loopback address may be served without a token; any other needs a non-empty one.
pub fn check_listen(addr: SocketAddr, token: Option<&str>) -> Result<(), DashboardError> {
    let has_token = token.is_some_and(|t| !t.trim().is_empty());
    if addr.ip().is_loopback() || has_token { Ok(()) } else { Err(DashboardError::TokenRequired(addr)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DashboardErrorKind;

    #[test]
    fn only_loopback_listens_without_a_token() {
        let table: &[(&str, Option<&str>, bool)] = &[
            ("127.0.0.1:8080", None, true),
            ("[::1]:8080", None, true),
            ("127.0.0.1:8080", Some("t"), true),
            ("0.0.0.0:8080", None, false),
            ("0.0.0.0:8080", Some(""), false),
            ("0.0.0.0:8080", Some("   "), false),
            ("0.0.0.0:8080", Some("secret"), true),
            ("[::]:8080", None, false),
            ("192.168.1.2:80", None, false),
            ("192.168.1.2:80", Some("secret"), true),
        ];
        for (addr, token, allowed) in table {
            let result = check_listen(addr.parse().unwrap(), *token);
            assert_eq!(result.is_ok(), *allowed, "{addr} with {token:?}");
            if let Err(err) = result {
                assert_eq!(err.kind(), DashboardErrorKind::TokenRequired);
            }
        }
    }
}
