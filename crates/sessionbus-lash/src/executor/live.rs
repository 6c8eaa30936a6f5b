//! lash's turn activity (text deltas, tool starts and ends) -> the turn's live output
//! (`TurnContext::live`), which the bus streams to watchers and to callers that ask.

use lash_core::{TurnActivity, TurnActivitySink};
use sessionbus_api::TurnContext;

/// Passes every activity of a lash turn on, as lash's JSON, without waiting.
pub(super) struct LiveActivities<'a>(pub(super) &'a TurnContext);

#[async_trait::async_trait]
impl TurnActivitySink for LiveActivities<'_> {
    async fn emit(&self, activity: TurnActivity) {
        if let Ok(event) = serde_json::to_value(&activity) {
            self.0.live(event);
        }
    }
}
