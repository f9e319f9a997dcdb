//! `GET /metrics`: the server's [`Stats`] in the OpenMetrics text format
//! that Prometheus scrapes, encoded by `prometheus-client`.
//!
//! Counters and gauges are read from the atomics the stages already bump,
//! at scrape time (a [`Collector`]), so exporting them costs the data path
//! nothing; the two latency histograms are `prometheus-client` histograms
//! the stages observe directly.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::protocol::ErrorCode;
use crate::stats::Stats;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything `/metrics` exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Exports `stats`.
    pub fn new(stats: Arc<Stats>) -> Self {
        let mut registry = Registry::with_prefix("tickcast");
        registry.register_with_unit(
            "fanout_latency",
            "Time from a tick's producer timestamp to its frame queued for every subscriber",
            Unit::Seconds,
            stats.fanout_latency.clone(),
        );
        registry.register_with_unit(
            "write_latency",
            "Time from a writer taking a connection's queued frames to the socket accepting their last byte",
            Unit::Seconds,
            stats.write_latency.clone(),
        );
        registry.register_collector(Box::new(StatsCollector(stats)));
        Metrics { registry }
    }

    /// The current values, as an OpenMetrics text document.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Reads the [`Stats`] counters at scrape time.
#[derive(Debug)]
struct StatsCollector(Arc<Stats>);

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: &AtomicU64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value.load(Ordering::Relaxed));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn load(value: &AtomicUsize) -> i64 {
    i64::try_from(value.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        let e = &mut encoder;
        gauge(
            e,
            "connections",
            "WebSocket connections open",
            load(&s.sessions_open),
        )?;
        counter(
            e,
            "connections_opened",
            "WebSocket connections opened since start",
            &s.sessions_total,
        )?;
        gauge(
            e,
            "subscriptions",
            "Symbol subscriptions over all connections (\"*\" counts every symbol)",
            load(&s.subscriptions),
        )?;
        counter(
            e,
            "ticks_produced",
            "Ticks the feed wrote into the ring",
            &s.ticks_produced,
        )?;
        counter(
            e,
            "ticks_ingested",
            "Ticks publishers sent through /ingest or NATS",
            &s.ticks_ingested,
        )?;
        gauge(
            e,
            "feed_connected",
            "1 while the feed is connected to its source (0: NATS connection lost)",
            i64::from(s.feed_connected.load(Ordering::Relaxed)),
        )?;
        counter(
            e,
            "feed_unknown_symbols",
            "Feed messages dropped for naming a symbol this server does not carry",
            &s.feed_unknown_symbols,
        )?;
        counter(
            e,
            "feed_bad_ticks",
            "Feed messages dropped for not decoding, a bad price or a seq not after the last",
            &s.feed_bad_ticks,
        )?;
        counter(
            e,
            "feed_symbols_refused",
            "Feed ticks of new symbols refused because the server carries --max-symbols already",
            &s.feed_symbols_refused,
        )?;
        gauge(
            e,
            "symbols",
            "Symbols the fan-out serves: the fixed list, or those learned from the feed so far",
            load(&s.symbols),
        )?;
        counter(
            e,
            "ticks_fanned_out",
            "Ticks the fan-out read from the ring",
            &s.ticks_read,
        )?;
        counter(
            e,
            "ring_lost",
            "Ticks the fan-out lost by falling a whole ring behind the feed",
            &s.ring_lagged,
        )?;
        gauge(
            e,
            "ring_lag",
            "Ticks published but not yet read by the fan-out (its last pass)",
            i64::try_from(s.ring_lag.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        )?;
        counter(
            e,
            "feed_gaps",
            "Ticks whose seq did not follow their symbol's previous one (sent as reset snapshots)",
            &s.feed_gaps,
        )?;
        counter(
            e,
            "frames_sent",
            "Frames fully written to client sockets",
            &s.frames_sent,
        )?;
        counter(
            e,
            "bytes_sent",
            "Bytes written to client sockets",
            &s.bytes_sent,
        )?;
        counter(
            e,
            "conflated",
            "Tick deliveries that replaced an older unsent tick of a client that fell behind",
            &s.conflated,
        )?;
        counter(
            e,
            "slow_consumer_closes",
            "Connections closed with 1008 slow consumer",
            &s.slow_consumer_closes,
        )?;
        counter(
            e,
            "rate_limit_closes",
            "Connections closed with 1008 for sending more frames a second than --max-messages-per-second",
            &s.rate_limit_closes,
        )?;
        counter(
            e,
            "connection_panics",
            "Connections ended by a panic in the server's handling of them (a bug: each is logged)",
            &s.connection_panics,
        )?;
        counter(
            e,
            "replayed_ticks",
            "Ticks replayed to clients resuming with from",
            &s.replayed,
        )?;
        counter(
            e,
            "resets",
            "Reset snapshots sent to clients whose from was out of reach",
            &s.resets,
        )?;
        let mut errors = e.encode_descriptor(
            "errors",
            "error replies sent, by code",
            None,
            MetricType::Counter,
        )?;
        for code in ErrorCode::ALL {
            let count = ConstCounter::new(s.errors[code as usize].load(Ordering::Relaxed));
            count.encode(errors.encode_family(&[("code", code.as_str())])?)?;
        }
        if let Some(shards) = s.shard_connections.get() {
            let mut open = e.encode_descriptor(
                "shard_connections",
                "WebSocket connections each shard (event loop) serves",
                None,
                MetricType::Gauge,
            )?;
            for (index, load) in shards.iter().enumerate() {
                let gauge = ConstGauge::new(load.load(Ordering::Relaxed) as i64);
                let shard = index.to_string();
                gauge.encode(open.encode_family(&[("shard", shard.as_str())])?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_counters_gauges_errors_by_code_and_histograms() {
        let stats = Arc::new(Stats::default());
        Stats::add(&stats.frames_sent, 42);
        stats.sessions_open.store(3, Ordering::Relaxed);
        stats.count_error(ErrorCode::UnknownSymbol);
        stats.fanout_latency.observe(0.002);
        let text = Metrics::new(stats).render();
        for line in [
            "tickcast_frames_sent_total 42",
            "tickcast_connections 3",
            "tickcast_feed_connected 1",
            "tickcast_errors_total{code=\"unknown_symbol\"} 1",
            "tickcast_errors_total{code=\"bad_json\"} 0",
            "tickcast_fanout_latency_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
