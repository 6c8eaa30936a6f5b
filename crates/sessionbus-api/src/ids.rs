//! Ids on subjects: how an arbitrary session or turn id becomes one NATS subject token
//! and one JetStream KV key (README.md, "Subjects"; docs/decisions/0001-id-encoding.md).
//!
//! An id made only of `[A-Za-z0-9_-]` is its own token; any other id is written as `=`
//! followed by its unpadded base64url encoding. Decoding is strict: a token is accepted
//! only when re-encoding its id gives the same token, so every id has one spelling.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::PluginError;

/// The longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Marks a token that carries a base64url-encoded id.
const ENCODED_MARKER: char = '=';

/// Checks the rules every id obeys: not empty, not only whitespace, at most
/// [`MAX_ID_BYTES`] bytes, no control characters. `what` names the id in the error
/// (`"session id"`, `"turn id"`).
pub fn validate_id(what: &str, id: &str) -> Result<(), PluginError> {
    if id.is_empty() {
        return Err(PluginError::InvalidRequest(format!("{what} must not be empty")));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(PluginError::InvalidRequest(format!(
            "{what} is {} bytes long; the limit is {MAX_ID_BYTES}",
            id.len()
        )));
    }
    if id.trim().is_empty() {
        return Err(PluginError::InvalidRequest(format!("{what} must not be only whitespace")));
    }
    if id.chars().any(char::is_control) {
        return Err(PluginError::InvalidRequest(format!("{what} {:?} contains a control character", id)));
    }
    Ok(())
}

fn is_plain(id: &str) -> bool {
    id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Encodes a valid id as a subject token (and KV key). Fails with
/// [`PluginError::InvalidRequest`] when the id breaks [`validate_id`].
pub fn encode_id(what: &str, id: &str) -> Result<String, PluginError> {
    validate_id(what, id)?;
    if is_plain(id) {
        return Ok(id.to_owned());
    }
    let mut token = String::with_capacity(1 + id.len().div_ceil(3) * 4);
    token.push(ENCODED_MARKER);
    URL_SAFE_NO_PAD.encode_string(id.as_bytes(), &mut token);
    Ok(token)
}

/// Decodes a subject token back into its id, refusing any token that is not the
/// canonical encoding of a valid id.
pub fn decode_id(what: &str, token: &str) -> Result<String, PluginError> {
    let invalid = || PluginError::InvalidRequest(format!("{what} token {token:?} is not a canonical sessionbus id"));
    let id = match token.strip_prefix(ENCODED_MARKER) {
        Some(encoded) => {
            let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| invalid())?;
            String::from_utf8(bytes).map_err(|_| invalid())?
        }
        None if is_plain(token) => token.to_owned(),
        None => return Err(invalid()),
    };
    validate_id(what, &id)?;
    if encode_id(what, &id)? != token {
        return Err(invalid());
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_subject_token(token: &str) -> bool {
        !token.is_empty()
            && token.chars().all(|c| !c.is_whitespace() && !c.is_control() && c != '.' && c != '*' && c != '>')
    }

    fn is_kv_key(key: &str) -> bool {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    fn valid_id() -> impl Strategy<Value = String> {
        "\\PC{1,80}".prop_filter("valid ids only", |id| validate_id("id", id).is_ok())
    }

    proptest! {
        #[test]
        fn every_valid_id_round_trips(id in valid_id()) {
            let token = encode_id("id", &id).unwrap();
            prop_assert_eq!(decode_id("id", &token).unwrap(), id);
        }

        #[test]
        fn every_token_is_one_subject_token_and_a_kv_key(id in valid_id()) {
            let token = encode_id("id", &id).unwrap();
            prop_assert!(is_subject_token(&token), "{token:?}");
            prop_assert!(is_kv_key(&token), "{token:?}");
        }

        #[test]
        fn plain_ids_pass_through(id in "[A-Za-z0-9_-]{1,256}") {
            prop_assert_eq!(encode_id("id", &id).unwrap(), id);
        }

        #[test]
        fn decoding_refuses_non_canonical_tokens(id in "[A-Za-z0-9_-]{1,100}") {
            let spelled_twice = format!("={}", URL_SAFE_NO_PAD.encode(id.as_bytes()));
            prop_assert!(matches!(decode_id("id", &spelled_twice), Err(PluginError::InvalidRequest(_))));
        }

        #[test]
        fn random_tokens_never_panic_and_decode_canonically(token in "\\PC{0,64}") {
            if let Ok(id) = decode_id("id", &token) {
                prop_assert_eq!(encode_id("id", &id).unwrap(), token);
            }
        }
    }

    #[test]
    fn plain_example_and_non_canonical_example() {
        assert_eq!(encode_id("id", "chat-42").unwrap(), "chat-42");
        assert!(matches!(decode_id("id", "=Y2hhdC00Mg"), Err(PluginError::InvalidRequest(_))));
        assert_eq!(encode_id("id", "a.b").unwrap(), "=YS5i");
        assert_eq!(decode_id("id", "=YS5i").unwrap(), "a.b");
    }

    #[test]
    fn bad_ids_are_invalid_requests() {
        let too_long = "x".repeat(MAX_ID_BYTES + 1);
        for bad in ["", "   ", "\t\n", "a\r\nb", "nul\0", "bell\u{7}", too_long.as_str()] {
            let err = encode_id("session id", bad).unwrap_err();
            assert!(matches!(err, PluginError::InvalidRequest(_)), "{bad:?}: {err:?}");
        }
        assert!(encode_id("id", &"x".repeat(MAX_ID_BYTES)).is_ok());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in ["", "a.b", "a*", ">", "=", "=!!", "=/w", "a b", "=AA"] {
            let err = decode_id("id", bad).expect_err(bad);
            assert!(matches!(err, PluginError::InvalidRequest(_)), "{bad:?}: {err:?}");
        }
    }
}
