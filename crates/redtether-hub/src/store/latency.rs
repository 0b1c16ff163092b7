//! How long the store's main operations take, by operation: the `redtether_hub_store_duration_seconds`
//! histogram. The store times itself so every caller is counted, the API's and the sessions'.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::time::Instant;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

fn histogram() -> Histogram {
    // 50 µs (a cached read) to about 1.6 s (a flush on a slow SD card).
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

#[derive(Debug, Clone)]
pub struct StoreLatency(Family<OpLabels, Histogram, fn() -> Histogram>);

impl Default for StoreLatency {
    fn default() -> Self {
        StoreLatency(Family::new_with_constructor(histogram))
    }
}

impl StoreLatency {
    /// The family to register.
    pub fn family(&self) -> Family<OpLabels, Histogram, fn() -> Histogram> {
        self.0.clone()
    }

    /// Runs `f`, counting how long it took under `op`.
    pub fn time<T>(&self, op: &'static str, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = f();
        self.0.get_or_create(&OpLabels { op }).observe(started.elapsed().as_secs_f64());
        out
    }
}
