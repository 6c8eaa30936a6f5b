//! What an append failure means for the writer: a pure decision, so it is tested by table.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};

/// What to do after an append to a store's log failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppendFailure {
    /// Another record landed first (or another conditioned write is in flight on a
    /// clustered stream): catch up with the log and append after it.
    LostRace,
    /// No answer, or no leader: the record may have landed. Catch up and send the same
    /// record again (same message id, so it is stored once).
    Unknown,
    /// The server refused the record itself: give up.
    Refused,
}

/// Decides from the library's kind and, for a server answer, its error code.
pub(crate) fn classify(kind: PublishErrorKind, code: Option<ErrorCode>) -> AppendFailure {
    match (kind, code) {
        (PublishErrorKind::WrongLastSequence, _) => AppendFailure::LostRace,
        // 10164: a clustered stream checks conditioned writes one at a time; 10158: the
        // message id is in flight (our own earlier send).
        (_, Some(ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT | ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT)) => {
            AppendFailure::LostRace
        }
        // 10008: the stream has no leader (an election).
        (_, Some(ErrorCode::CLUSTER_NOT_AVAILABLE)) => AppendFailure::Unknown,
        (PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::StreamNotFound, None) => {
            AppendFailure::Unknown
        }
        _ => AppendFailure::Refused,
    }
}

/// [`classify`] of a failed publish.
pub(crate) fn classify_error(err: &PublishError) -> AppendFailure {
    let code = std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
        .map(async_nats::jetstream::Error::error_code);
    classify(err.kind(), code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_failures_are_classified_by_kind_and_server_code() {
        let table = [
            (PublishErrorKind::WrongLastSequence, None, AppendFailure::LostRace),
            (PublishErrorKind::Other, Some(ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT), AppendFailure::LostRace),
            (PublishErrorKind::Other, Some(ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT), AppendFailure::LostRace),
            (PublishErrorKind::Other, Some(ErrorCode::CLUSTER_NOT_AVAILABLE), AppendFailure::Unknown),
            (PublishErrorKind::TimedOut, None, AppendFailure::Unknown),
            (PublishErrorKind::BrokenPipe, None, AppendFailure::Unknown),
            (PublishErrorKind::StreamNotFound, None, AppendFailure::Unknown),
            (PublishErrorKind::MaxPayloadExceeded, None, AppendFailure::Refused),
            (PublishErrorKind::Other, Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM), AppendFailure::Refused),
            (PublishErrorKind::Other, None, AppendFailure::Refused),
        ];
        for (kind, code, expected) in table {
            assert_eq!(classify(kind, code), expected, "{kind:?} {code:?}");
        }
    }

    #[test]
    fn a_server_answer_is_read_from_the_error_source() {
        let api: async_nats::jetstream::Error =
            serde_json::from_str(r#"{"code":400,"err_code":10164,"description":"wrong last sequence"}"#)
                .expect("an API error");
        let err = PublishError::with_source(PublishErrorKind::Other, api);
        assert_eq!(classify_error(&err), AppendFailure::LostRace);
    }
}
