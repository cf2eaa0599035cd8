//! Prometheus metrics: upstream's service account token counters, with their exact names and HELP
//! texts (`pkg/serviceaccount/metrics.go`), and ours about rotations and superseded tokens.
//!
//! Served in the Prometheus text format 0.0.4, as kube-apiserver serves `/metrics`, so the lines
//! match upstream's (`# HELP serviceaccount_stale_tokens_total ...`); every Prometheus scraper
//! parses it.
//!
//! The metrics are encoded by a collector rather than registered one by one because registration
//! appends a `.` to HELP texts, and upstream's have none.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::classify::{TokenUse, UpstreamCount, UseOutcome};
use super::ledger::Rotation;

/// The `Content-Type` to serve [`Metrics::encode`]'s output with.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Counter names without `_total`: the encoder appends it to counters.
const VALID_TOKENS: (&str, &str) = (
    "serviceaccount_valid_tokens",
    "[ALPHA] Cumulative valid projected service account tokens used",
);
const STALE_TOKENS: (&str, &str) = (
    "serviceaccount_stale_tokens",
    "[ALPHA] Cumulative stale projected service account tokens used",
);
const LEGACY_TOKENS: (&str, &str) = (
    "serviceaccount_legacy_tokens",
    "[ALPHA] Cumulative legacy service account tokens used",
);
const SUPERSEDED_USES: (&str, &str) = (
    "projected_token_superseded_uses",
    "Uses of a token after the projector had written its replacement",
);
const EXPIRED_USES: (&str, &str) = (
    "projected_token_expired_uses",
    "Uses of an emulator-issued token past its expiry (rejected with 401)",
);
const ROTATIONS: (&str, &str) = (
    "projected_token_rotations",
    "Tokens written by the projector (first writes included)",
);
const RELOAD_DELAY: (&str, &str) = (
    "projected_token_reload_delay_seconds",
    "Time from a rotation to each later use of the token it replaced",
);

const REPAIRS: (&str, &str) = (
    "projected_token_repairs",
    "Entries of a projected volume found changed by someone else and put back by the projector, by entry (path) and what was there (found: missing, symlink, file, directory, fifo, socket, device, modified)",
);

const ROTATION_LATENESS: (&str, &str) = (
    "projected_token_rotation_lateness_seconds",
    "How late each rotation was published against its schedule (first writes excluded)",
);

/// Upper bounds of the lateness histogram: a healthy projector is sub-millisecond to tens of
/// milliseconds late; seconds mean it cannot keep up (or the API was down and it retried).
const LATENESS_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// Upper bounds of the reload delay histogram: client-go rereads its token file about every 50 s,
/// so the interesting range is sub-second to a few minutes.
const RELOAD_DELAY_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
];

/// The pod a token belongs to. Bounded: pods come from the emulator's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PodLabels {
    namespace: String,
    pod: String,
    serviceaccount: String,
}

/// One repaired entry of a projected volume (`emulate`'s projector put it back).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RepairLabels {
    pub namespace: String,
    pub pod: String,
    pub volume: String,
    /// The entry, relative to the volume directory: `token`, `ca.crt`, `..data`.
    pub path: String,
    /// What was there instead: `missing`, `symlink`, `file`, `directory`, `fifo`, `socket`,
    /// `device`, `modified`.
    pub found: String,
}

#[derive(Debug)]
struct TokenMetrics {
    valid: Counter,
    stale: Counter,
    legacy: Counter,
    superseded: Family<PodLabels, Counter>,
    expired: Counter,
    rotations: Family<PodLabels, Counter>,
    repairs: Family<RepairLabels, Counter>,
    reload_delay: Histogram,
    rotation_lateness: Histogram,
}

impl Collector for TokenMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_metric(&mut encoder, VALID_TOKENS, &self.valid)?;
        encode_metric(&mut encoder, STALE_TOKENS, &self.stale)?;
        encode_metric(&mut encoder, LEGACY_TOKENS, &self.legacy)?;
        encode_metric(&mut encoder, SUPERSEDED_USES, &self.superseded)?;
        encode_metric(&mut encoder, EXPIRED_USES, &self.expired)?;
        encode_metric(&mut encoder, ROTATIONS, &self.rotations)?;
        encode_metric(&mut encoder, REPAIRS, &self.repairs)?;
        encode_metric(&mut encoder, RELOAD_DELAY, &self.reload_delay)?;
        encode_metric(&mut encoder, ROTATION_LATENESS, &self.rotation_lateness)
    }
}

fn encode_metric(
    encoder: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// The server's metrics. Cheap to observe from any thread: label-less counters are one atomic
/// add; labelled ones allocate their label set (only on superseded uses and rotations).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    tokens: Arc<TokenMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let tokens = Arc::new(TokenMetrics {
            valid: Counter::default(),
            stale: Counter::default(),
            legacy: Counter::default(),
            superseded: Family::default(),
            expired: Counter::default(),
            rotations: Family::default(),
            repairs: Family::default(),
            reload_delay: Histogram::new(RELOAD_DELAY_BUCKETS),
            rotation_lateness: Histogram::new(LATENESS_BUCKETS),
        });
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Arc::clone(&tokens)));
        Self { registry, tokens }
    }

    /// For other modules' metrics (e.g. request counts), registered before the server starts.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Counts one token use as the ledger classified it.
    pub fn observe(&self, token_use: &TokenUse, outcome: &UseOutcome) {
        let upstream_counter = match outcome.counted_as {
            UpstreamCount::Valid => Some(&self.tokens.valid),
            UpstreamCount::Stale { .. } => Some(&self.tokens.stale),
            UpstreamCount::Legacy => Some(&self.tokens.legacy),
            UpstreamCount::Uncounted => None,
        };
        if let Some(counter) = upstream_counter {
            counter.inc();
        }
        if outcome.expired {
            self.tokens.expired.inc();
        }
        if let Some(delay) = outcome.superseded_after {
            let labels = PodLabels {
                namespace: token_use.namespace.clone(),
                pod: token_use.pod.clone().unwrap_or_default(),
                serviceaccount: token_use.service_account.clone(),
            };
            self.tokens.superseded.get_or_create(&labels).inc();
            self.tokens.reload_delay.observe(delay.as_secs_f64());
        }
    }

    /// Counts one token written by the projector.
    pub fn observe_rotation(&self, rotation: &Rotation) {
        let labels = PodLabels {
            namespace: rotation.namespace.clone(),
            pod: rotation.pod.clone(),
            serviceaccount: rotation.service_account.clone(),
        };
        self.tokens.rotations.get_or_create(&labels).inc();
    }

    /// Counts one entry of a projected volume put back after someone changed it.
    pub fn observe_repair(&self, labels: &RepairLabels) {
        self.tokens.repairs.get_or_create(labels).inc();
    }

    /// How late one rotation was published against its schedule, in seconds.
    pub fn observe_rotation_lateness(&self, seconds: f64) {
        self.tokens.rotation_lateness.observe(seconds);
    }

    /// Every metric in the Prometheus text format; serve it with [`CONTENT_TYPE`].
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::{SignedDuration, Timestamp};

    fn token_use() -> TokenUse {
        TokenUse {
            at: Timestamp::UNIX_EPOCH,
            subject: "system:serviceaccount:default:app".to_owned(),
            namespace: "default".to_owned(),
            service_account: "app".to_owned(),
            pod: Some("app-0".to_owned()),
            pod_uid: None,
            jti: Some("jti".to_owned()),
            warn_after: None,
            issued_at: None,
            legacy: false,
            rejected: None,
            user_agent: None,
        }
    }

    fn outcome(counted_as: UpstreamCount, superseded_after: Option<SignedDuration>) -> UseOutcome {
        UseOutcome {
            classification: super::super::usage::Classification::NoWarnAfter,
            counted_as,
            superseded_after,
            expired: false,
            rejected: None,
            stale_annotation: None,
        }
    }

    #[test]
    fn upstream_names_help_and_counts() {
        let metrics = Metrics::new();
        let stale = UpstreamCount::Stale {
            seconds_after_warning: 3,
        };
        metrics.observe(&token_use(), &outcome(UpstreamCount::Valid, None));
        metrics.observe(&token_use(), &outcome(stale, None));
        metrics.observe(
            &token_use(),
            &outcome(stale, Some(SignedDuration::from_secs(7))),
        );
        metrics.observe(&token_use(), &outcome(UpstreamCount::Legacy, None));
        metrics.observe(&token_use(), &outcome(UpstreamCount::Uncounted, None));
        metrics.observe(
            &token_use(),
            &UseOutcome {
                expired: true,
                ..outcome(UpstreamCount::Uncounted, None)
            },
        );
        metrics.observe_rotation(&Rotation {
            at: Timestamp::UNIX_EPOCH,
            namespace: "default".to_owned(),
            pod: "app-0".to_owned(),
            service_account: "app".to_owned(),
            volume: "v".to_owned(),
            path: "token".to_owned(),
            old_jti: None,
            new_jti: Some("jti".to_owned()),
        });

        metrics.observe_rotation_lateness(0.003);
        metrics.observe_repair(&RepairLabels {
            namespace: "default".to_owned(),
            pod: "app-0".to_owned(),
            volume: "v".to_owned(),
            path: "token".to_owned(),
            found: "symlink".to_owned(),
        });

        let text = metrics.encode().unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for expected in [
            "# HELP serviceaccount_valid_tokens_total [ALPHA] Cumulative valid projected service account tokens used",
            "# TYPE serviceaccount_valid_tokens_total counter",
            "serviceaccount_valid_tokens_total 1",
            "# HELP serviceaccount_stale_tokens_total [ALPHA] Cumulative stale projected service account tokens used",
            "# TYPE serviceaccount_stale_tokens_total counter",
            "serviceaccount_stale_tokens_total 2",
            "# HELP serviceaccount_legacy_tokens_total [ALPHA] Cumulative legacy service account tokens used",
            "# TYPE serviceaccount_legacy_tokens_total counter",
            "serviceaccount_legacy_tokens_total 1",
            r#"projected_token_superseded_uses_total{namespace="default",pod="app-0",serviceaccount="app"} 1"#,
            "projected_token_expired_uses_total 1",
            r#"projected_token_rotations_total{namespace="default",pod="app-0",serviceaccount="app"} 1"#,
            r#"projected_token_repairs_total{namespace="default",pod="app-0",volume="v",path="token",found="symlink"} 1"#,
            "projected_token_reload_delay_seconds_count 1",
            "projected_token_rotation_lateness_seconds_count 1",
            r#"projected_token_rotation_lateness_seconds_bucket{le="0.005"} 1"#,
            r#"projected_token_reload_delay_seconds_bucket{le="10"} 1"#,
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in:\n{text}");
        }
        assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    }
}
