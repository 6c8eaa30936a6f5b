//! Timing: sequential latency percentiles and throughput with calls in flight.

use std::future::Future;
use std::time::Instant;

use futures::StreamExt as _;

/// How a scenario is measured.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Latency blocks per operation (raw and bus alternate block by block).
    pub blocks: usize,
    /// Sequential calls per block.
    pub per_block: usize,
    /// Calls per throughput measurement.
    pub calls: usize,
    /// Calls in flight for throughput.
    pub in_flight: usize,
}

impl Shape {
    /// This shape with one in `n` of its sequential and throughput calls (at least one
    /// per block, and at least one per call in flight).
    pub fn share(self, n: usize) -> Self {
        let n = n.max(1);
        Self { per_block: self.per_block.div_ceil(n), calls: (self.calls / n).max(self.in_flight), ..self }
    }
}

/// Latency samples of one operation, in microseconds, sorted.
#[derive(Clone, Debug, Default)]
pub struct Samples(pub Vec<u64>);

impl Samples {
    /// The `p`-th percentile in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        crate::output::percentile_ms(&self.0, p)
    }
}

/// Runs `op` `count` times, one after another; returns the sorted latencies.
/// Fails on the first error: a benchmark of failing calls measures nothing.
pub async fn sequential<F, Fut, E>(count: usize, mut op: F) -> Result<Samples, E>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        op(i).await?;
        samples.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    samples.sort_unstable();
    Ok(Samples(samples))
}

/// Two operations measured in alternating blocks, so machine noise hits both alike.
pub async fn interleaved<FA, FutA, FB, FutB, E>(
    blocks: usize,
    per_block: usize,
    mut a: FA,
    mut b: FB,
) -> Result<(Samples, Samples), E>
where
    FA: FnMut(usize) -> FutA,
    FutA: Future<Output = Result<(), E>>,
    FB: FnMut(usize) -> FutB,
    FutB: Future<Output = Result<(), E>>,
{
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for block in 0..blocks {
        let base = block * per_block;
        first.extend(sequential(per_block, |i| a(base + i)).await?.0);
        second.extend(sequential(per_block, |i| b(base + i)).await?.0);
    }
    first.sort_unstable();
    second.sort_unstable();
    Ok((Samples(first), Samples(second)))
}

/// Runs `op` `count` times with `in_flight` calls at once; returns calls per second.
pub async fn throughput<F, Fut, E>(count: usize, in_flight: usize, op: F) -> Result<f64, E>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let started = Instant::now();
    let mut calls = futures::stream::iter(0..count).map(&op).buffer_unordered(in_flight);
    while let Some(result) = calls.next().await {
        result?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64().max(1e-9))
}
