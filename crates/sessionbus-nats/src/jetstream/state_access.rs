//! Conditional writes, atomic batches and leader reads on the session layout, for a
//! writer that is not a bus host: the lash store (crate `sessionbus-lash`, decision
//! 0024) writes each lash commit onto the session's graph and meta in the same atomic
//! batch as its own log record. The writes, conditions and retries are the host's own,
//! so the records such a writer stores are the ones every bus op reads.

use std::time::Duration;

use bytes::Bytes;
use sessionbus_api::{PluginError, SessionHandle};

use super::api::{JetStreamApi, JsErrorExt as _, JsErrorKind, StoredMessage, Write};
use super::layout::STATE_STREAM;
use crate::subjects::Subjects;

/// Access to `SESSIONBUS_STATE` over one client.
#[derive(Clone)]
pub struct StateAccess {
    api: JetStreamApi,
    subjects: Subjects,
}

impl std::fmt::Debug for StateAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateAccess").field("subjects", &self.subjects).finish_non_exhaustive()
    }
}

/// One write of a batch: subject, body, message id and optional condition.
#[derive(Clone, Debug)]
pub struct StateWrite(Write);

impl StateWrite {
    /// A write of `payload` to `subject`, deduplicated by `msg_id`.
    pub fn new(subject: String, payload: Bytes, msg_id: String) -> Self {
        Self(Write::new(subject, payload, msg_id))
    }

    /// A write to a subject that keeps only its latest record (a session's meta):
    /// stored with `Nats-Rollup: sub`.
    pub fn latest(subject: String, payload: Bytes, msg_id: String) -> Self {
        Self(Write::latest(subject, payload, msg_id))
    }

    /// Stored only if the last sequence of the write's subject is `sequence` (0: the
    /// subject was never written).
    #[must_use]
    pub fn if_last_sequence(self, sequence: u64) -> Self {
        Self(self.0.if_last_sequence(sequence, None))
    }

    /// Stored only if the last sequence of `subjects` (a wildcard: a session's
    /// `state.<sid>.>`) is `sequence` (0: none of them was ever written).
    #[must_use]
    pub fn if_last_sequence_on(self, sequence: u64, subjects: String) -> Self {
        Self(self.0.if_last_sequence(sequence, Some(subjects)))
    }
}

/// Where a write was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The stream sequence of the (last) record.
    pub sequence: u64,
    /// True when its message id was stored before: the record is the first copy, and
    /// no condition was checked.
    pub duplicate: bool,
}

/// A record read back from the stream.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    /// Its stream sequence.
    pub seq: u64,
    /// The subject it is stored on.
    pub subject: String,
    /// Its message id (`Nats-Msg-Id`).
    pub msg_id: Option<String>,
    /// Its body.
    pub payload: Bytes,
}

impl From<StoredMessage> for StoredRecord {
    fn from(message: StoredMessage) -> Self {
        Self { seq: message.seq, subject: message.subject, msg_id: message.msg_id, payload: message.payload }
    }
}

/// The most records one [`StateAccess::read_batch`] asks for.
const READ_BATCH: usize = 256;

impl StateAccess {
    /// Access over `client` under `subjects`' prefix; each call is answered within
    /// `timeout`, and reads retry leader elections for three times that long.
    pub fn new(client: async_nats::Client, subjects: Subjects, timeout: Duration) -> Self {
        Self { api: JetStreamApi::new(client, timeout, timeout * 3), subjects }
    }

    /// The subject scheme.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The last record on `subject`, read from the stream leader.
    pub async fn last(&self, subject: &str) -> Result<Option<StoredRecord>, PluginError> {
        let stored =
            self.api.last(STATE_STREAM, subject).await.map_err(|err| err.into_plugin("reading session state"))?;
        Ok(stored.map(StoredRecord::from))
    }

    /// The first record on `subject` at or after `from_seq`, read from the leader.
    pub async fn next(&self, subject: &str, from_seq: u64) -> Result<Option<StoredRecord>, PluginError> {
        let stored = self
            .api
            .next(STATE_STREAM, subject, from_seq)
            .await
            .map_err(|err| err.into_plugin("reading session state"))?;
        Ok(stored.map(StoredRecord::from))
    }

    /// The records on `subject` (a wildcard: a session's `state.<sid>.>`) from
    /// `from_seq` through `through_seq` (a sequence the leader reported), in order, as
    /// far as one batched direct get returns them: possibly none (a lagging replica, a
    /// failed read), never one after `through_seq`. The rest is read with [`Self::next`].
    pub async fn read_batch(&self, subject: &str, from_seq: u64, through_seq: u64) -> Vec<StoredRecord> {
        let records = self.api.batch_read(STATE_STREAM, subject, from_seq, through_seq, READ_BATCH).await;
        records.into_iter().map(StoredRecord::from).collect()
    }

    /// Stores `writes` as one atomic batch (all or none; one write is one publish) and
    /// says where the last one is; a batch's records take consecutive sequences. A
    /// failed condition (or a batch repeating stored message ids) is
    /// [`PluginError::Conflict`]; a batch with no answer is [`PluginError::Unavailable`]
    /// and may have been stored.
    pub async fn publish_batch(&self, writes: &[StateWrite]) -> Result<Stored, PluginError> {
        let writes: Vec<Write> = writes.iter().map(|write| write.0.clone()).collect();
        match self.api.publish_batch(&writes).await {
            Ok(ack) => Ok(Stored { sequence: ack.sequence, duplicate: ack.duplicate }),
            Err(err)
                if matches!(
                    err.kind(),
                    JsErrorKind::WrongLastSequence | JsErrorKind::InFlight | JsErrorKind::BatchDuplicate
                ) =>
            {
                Err(PluginError::Conflict(format!("a condition of the session state batch failed: {err}")))
            }
            Err(err) => Err(err.into_plugin("storing a session state batch")),
        }
    }

    /// Writes the session's registry entry (what `sessions` lists) once; an entry
    /// already written is left as it is.
    pub async fn register_session(
        &self,
        handle: &SessionHandle,
        created_at: &str,
        msg_id: String,
    ) -> Result<(), PluginError> {
        super::registry::write_index(&self.api, &self.subjects, handle, created_at, msg_id).await
    }
}
