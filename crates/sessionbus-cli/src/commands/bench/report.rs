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
    /// The scenario and what its calls cost the worker and the servers in CPU, for the
    /// CPU table.
    cpu: Option<(String, CpuPerCall)>,
}

/// CPU microseconds per call in a throughput phase (`None` where `/proc` could not tell).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuPerCall {
    /// The worker process, per bus call.
    pub worker_us: Option<f64>,
    /// The nats-server processes, per bus call.
    pub server_bus_us: Option<f64>,
    /// The nats-server processes, per raw call.
    pub server_raw_us: Option<f64>,
}

impl CpuPerCall {
    /// The worker's CPU per call over the servers' CPU per bus call.
    fn worker_to_server(&self) -> Option<f64> {
        self.worker_us.zip(self.server_bus_us).map(|(worker, server)| worker / server.max(1e-9))
    }

    /// Adds the figures to a row's JSON entry.
    fn add_to(&self, json: &mut Value) {
        if let Value::Object(map) = json {
            map.insert("worker_cpu_us_per_call".into(), json!(self.worker_us));
            map.insert("server_cpu_us_per_bus_call".into(), json!(self.server_bus_us));
            map.insert("server_cpu_us_per_raw_call".into(), json!(self.server_raw_us));
            map.insert("worker_to_server_cpu_ratio".into(), json!(self.worker_to_server()));
        }
    }
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
            cpu: None,
        }
    }

    /// A scenario measured for latency and throughput: its p50 row (which holds every
    /// figure in the JSON) and its throughput row (which holds the CPU figures).
    pub fn latency_and_throughput(
        name: &str,
        raw_what: &str,
        (raw, bus): (&Samples, &Samples),
        (raw_per_s, bus_per_s): (f64, f64),
        p50_target: f64,
        in_flight: usize,
        cpu: CpuPerCall,
    ) -> Vec<Self> {
        let (raw50, bus50) = (raw.percentile_ms(50.0), bus.percentile_ms(50.0));
        let ratio = bus50 / raw50.max(1e-9);
        let throughput_ratio = bus_per_s / raw_per_s.max(1e-9);
        let mut latency = Self {
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
            cpu: None,
        };
        cpu.add_to(&mut latency.json);
        vec![latency, Self::throughput(name, in_flight, (raw_per_s, bus_per_s), Value::Null, cpu)]
    }

    fn throughput(
        name: &str,
        in_flight: usize,
        (raw_per_s, bus_per_s): (f64, f64),
        json: Value,
        cpu: CpuPerCall,
    ) -> Self {
        let ratio = bus_per_s / raw_per_s.max(1e-9);
        Self {
            name: format!("{name}, {in_flight} in flight (calls/s)"),
            raw: format!("{raw_per_s:.0}/s"),
            bus: format!("{bus_per_s:.0}/s"),
            ratio,
            target: format!(">= {THROUGHPUT_TARGET:.2}"),
            met: ratio >= THROUGHPUT_TARGET,
            json,
            cpu: Some((name.to_owned(), cpu)),
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
        Self { name, raw: before, bus: after, ratio, target: target.into(), met, json, cpu: None }
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
    print_cpu(rows);
}

/// The CPU table: per bus call, what the worker and the servers spent, beside what the
/// servers spent per raw call.
fn print_cpu(rows: &[Row]) {
    let micros = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |us| format!("{us:.1}"));
    let mut table = output::table([
        "CPU per call (µs)",
        "worker",
        "nats-server (bus)",
        "nats-server (raw)",
        "worker / nats-server",
    ]);
    for row in rows {
        let Some((op, cpu)) = &row.cpu else { continue };
        table.add_row(vec![
            op.clone(),
            micros(cpu.worker_us),
            micros(cpu.server_bus_us),
            micros(cpu.server_raw_us),
            cpu.worker_to_server().map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}")),
        ]);
    }
    println!("CPU time per call in the throughput phases (from /proc/<pid>/task/*/schedstat)\n{table}");
}
