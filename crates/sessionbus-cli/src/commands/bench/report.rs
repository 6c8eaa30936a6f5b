//! The rows of the result table, and the table and JSON they are printed as.

use serde_json::{Value, json};

use super::BenchArgs;
use super::measure::Samples;
use crate::output;

/// The lowest bus / raw throughput ratio that meets the target.
const THROUGHPUT_TARGET: f64 = 0.6;

/// One row of the result table.
pub struct Row {
    name: String,
    raw: String,
    bus: String,
    ratio: f64,
    target: String,
    met: bool,
    /// The row's entry in the JSON results (`Null`: none, the row before holds its figures).
    json: Value,
}

impl Row {
    /// The floor: the raw echo's latency, compared with nothing.
    pub fn floor(echo: &Samples) -> Self {
        Self {
            name: "raw request/reply echo (floor)".into(),
            raw: format!("{:.3} ms", echo.percentile_ms(50.0)),
            bus: "-".into(),
            ratio: 1.0,
            target: "-".into(),
            met: true,
            json: json!({"name": "echo", "raw_p50_ms": echo.percentile_ms(50.0), "raw_p99_ms": echo.percentile_ms(99.0)}),
        }
    }

    /// A scenario measured for latency and throughput: its p50 row (which holds every
    /// figure in the JSON) and its throughput row.
    pub fn latency_and_throughput(
        name: &str,
        raw_what: &str,
        (raw, bus): (&Samples, &Samples),
        (raw_per_s, bus_per_s): (f64, f64),
        p50_target: f64,
        in_flight: usize,
    ) -> Vec<Self> {
        let (raw50, bus50) = (raw.percentile_ms(50.0), bus.percentile_ms(50.0));
        let ratio = bus50 / raw50.max(1e-9);
        let throughput_ratio = bus_per_s / raw_per_s.max(1e-9);
        let latency = Self {
            name: format!("{name} p50 (raw: {raw_what})"),
            raw: format!("{raw50:.3} ms (p99 {:.3})", raw.percentile_ms(99.0)),
            bus: format!("{bus50:.3} ms (p99 {:.3})", bus.percentile_ms(99.0)),
            ratio,
            target: format!("<= {p50_target:.2}"),
            met: ratio <= p50_target,
            json: json!({
                "name": name, "raw": raw_what,
                "raw_p50_ms": raw50, "raw_p99_ms": raw.percentile_ms(99.0),
                "bus_p50_ms": bus50, "bus_p99_ms": bus.percentile_ms(99.0),
                "p50_ratio": ratio, "raw_per_s": raw_per_s, "bus_per_s": bus_per_s,
                "throughput_ratio": throughput_ratio,
            }),
        };
        vec![latency, Self::throughput(name, in_flight, raw_per_s, bus_per_s, Value::Null)]
    }

    /// A scenario measured for throughput only.
    pub fn throughput_only(name: &str, raw_per_s: f64, bus_per_s: f64, in_flight: usize) -> Self {
        let json = json!({
            "name": name, "raw_per_s": raw_per_s, "bus_per_s": bus_per_s,
            "throughput_ratio": bus_per_s / raw_per_s.max(1e-9),
        });
        Self::throughput(name, in_flight, raw_per_s, bus_per_s, json)
    }

    fn throughput(name: &str, in_flight: usize, raw_per_s: f64, bus_per_s: f64, json: Value) -> Self {
        let ratio = bus_per_s / raw_per_s.max(1e-9);
        Self {
            name: format!("{name}, {in_flight} in flight (calls/s)"),
            raw: format!("{raw_per_s:.0}/s"),
            bus: format!("{bus_per_s:.0}/s"),
            ratio,
            target: format!(">= {THROUGHPUT_TARGET:.2}"),
            met: ratio >= THROUGHPUT_TARGET,
            json,
        }
    }

    /// A growth measurement: `before` and `after` as printed, their ratio against
    /// `target` (`met` says whether it is met), and the JSON figures.
    pub fn growth(
        name: String,
        (before, after): (String, String),
        ratio: f64,
        target: &str,
        met: bool,
        json: Value,
    ) -> Self {
        Self { name, raw: before, bus: after, ratio, target: target.into(), met, json }
    }
}

/// The setup, as reported.
fn setup(args: &BenchArgs) -> &'static str {
    if args.cluster { "3-node cluster, R3" } else { "one node, R1" }
}

/// The results as `--json` prints them.
pub fn results_json(args: &BenchArgs, rows: &[Row]) -> Value {
    let results: Vec<&Value> = rows.iter().map(|r| &r.json).filter(|v| !v.is_null()).collect();
    json!({"setup": setup(args), "iterations": args.iterations, "in_flight": args.in_flight, "results": results})
}

/// Prints the results: a table, or JSON with `--json`.
pub fn print(args: &BenchArgs, rows: &[Row]) {
    if args.json {
        println!("{}", results_json(args, rows));
        return;
    }
    let mut table = output::table(["measurement", "raw", "bus", "ratio", "target", "met"]);
    for row in rows {
        table.add_row(vec![
            row.name.clone(),
            row.raw.clone(),
            row.bus.clone(),
            format!("{:.2}", row.ratio),
            row.target.clone(),
            if row.met { "yes".into() } else { "NO".into() },
        ]);
    }
    println!(
        "sessionbus bench ({}; medians of {} sequential calls, {} in flight for throughput)\n{table}",
        setup(args),
        args.iterations,
        args.in_flight
    );
    let missed = rows.iter().filter(|r| !r.met).count();
    println!("{} of {} targets met", rows.len() - missed, rows.len());
}
