//! The workers page's data: every worker's `$SRV.INFO` and `$SRV.STATS`, projected to
//! per-endpoint numbers.

use std::time::Duration;

use serde_json::{Value, json};
use sessionbus_api::PluginError;
use sessionbus_nats::worker::{ServiceQuery, service_answers};

/// How long answers to one `$SRV` request are collected.
pub const GATHER_WINDOW: Duration = Duration::from_millis(400);

/// The workers that answered, each with its endpoints' requests, errors (by code),
/// refused replies and average latency.
pub async fn workers(nats: &async_nats::Client) -> Result<Value, PluginError> {
    let (stats, infos) = futures::future::try_join(
        service_answers(nats, ServiceQuery::Stats, GATHER_WINDOW),
        service_answers(nats, ServiceQuery::Info, GATHER_WINDOW),
    )
    .await?;
    Ok(workers_view(&stats, &infos))
}

/// Joins stats and infos by service instance id (pure).
pub fn workers_view(stats: &[Value], infos: &[Value]) -> Value {
    let mut workers: Vec<Value> = stats
        .iter()
        .map(|worker| {
            let id = worker["id"].as_str().unwrap_or_default();
            let info = infos.iter().find(|info| info["id"] == id);
            let mut endpoints: Vec<Value> = worker["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|endpoint| {
                    let data = &endpoint["data"];
                    json!({
                        "name": endpoint["name"].as_str().unwrap_or("?"),
                        "requests": endpoint["num_requests"].as_u64().unwrap_or(0),
                        "errors": endpoint["num_errors"].as_u64().unwrap_or(0) + data["errors"].as_u64().unwrap_or(0),
                        "errors_by_code": data["by_code"].as_object().cloned().unwrap_or_default(),
                        "overloaded": data["overloaded"].as_u64().unwrap_or(0),
                        "refused_replies": data["refused_replies"].as_u64().unwrap_or(0),
                        "average_ms": endpoint["average_processing_time"].as_u64().unwrap_or(0) as f64 / 1e6,
                    })
                })
                .collect();
            endpoints.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            json!({
                "id": id,
                "worker_id": info.and_then(|i| i["metadata"]["worker_id"].as_str()).unwrap_or(id),
                "version": worker["version"].as_str().unwrap_or("?"),
                "started": worker["started"].as_str(),
                "endpoints": endpoints,
            })
        })
        .collect();
    workers.sort_by(|a, b| a["worker_id"].as_str().cmp(&b["worker_id"].as_str()));
    json!({ "workers": workers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_join_infos_by_instance_and_sum_errors() {
        let stats = [json!({"id": "i1", "version": "0.1.0", "endpoints": [
            {"name": "snapshot", "num_requests": 5, "num_errors": 1, "average_processing_time": 2_000_000,
             "data": {"errors": 2, "by_code": {"404": 2}, "overloaded": 0, "refused_replies": 3}}]})];
        let infos = [json!({"id": "i1", "metadata": {"worker_id": "w-one"}})];
        let view = workers_view(&stats, &infos);
        let endpoint = &view["workers"][0]["endpoints"][0];
        assert_eq!(view["workers"][0]["worker_id"], "w-one");
        assert_eq!(endpoint["errors"], 3);
        assert_eq!(endpoint["errors_by_code"]["404"], 2);
        assert_eq!(endpoint["refused_replies"], 3);
        assert_eq!(endpoint["average_ms"], 2.0);
        assert_eq!(workers_view(&stats, &[])["workers"][0]["worker_id"], "i1");
    }
}
