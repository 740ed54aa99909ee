//! Values read from the live server when `/metrics` is scraped: policy
//! generation and reload status, days until each signing certificate (and the
//! TLS certificate) expires, credential-cache hits and misses, the audit
//! queue; and rendering every metric as text.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

use super::Metrics;
use crate::authn::Authenticator;
use crate::net::tls::CertStore;
use crate::policy::reload::PolicyHandle;
use crate::token::Signer;

/// Values read at scrape time from the live server (each field is the
/// server's own handle).
#[derive(Debug)]
pub struct Live {
    pub policies: Arc<PolicyHandle>,
    pub signer: Arc<Signer>,
    pub auth: Arc<Authenticator>,
    pub audit: crate::audit::AuditSink,
    pub tls: Option<Arc<CertStore>>,
}

fn days_until(t: OffsetDateTime, now: OffsetDateTime) -> f64 {
    (t - now).as_seconds_f64() / 86_400.0
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = OffsetDateTime::now_utc();

        let status = self.policies.status();
        gauge(
            &mut encoder,
            "policy_generation",
            "Policy generation in force; increases at every successful reload",
            i64::try_from(status.generation).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            "policy_rules",
            "Rules in the policy in force",
            i64::try_from(status.rules).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            "policy_reload_failed",
            "1 when the last policy reload failed and the previous policy still serves",
            i64::from(status.stale),
        )?;

        let (queued, dropped) = self.audit.stats();
        gauge(
            &mut encoder,
            "audit_queue_depth",
            "Audit rows waiting for the database writer",
            i64::try_from(queued).unwrap_or(i64::MAX),
        )?;
        let c = ConstCounter::new(dropped);
        let m = encoder.encode_descriptor(
            "audit_dropped",
            "Audit rows dropped because the queue stayed full (the decision is still logged)",
            None,
            c.metric_type(),
        )?;
        c.encode(m)?;
        let (open_windows, folded) = self.audit.fold_stats();
        gauge(
            &mut encoder,
            "audit_fold_windows",
            "Grants whose repeats are being counted into their first audit row now",
            i64::try_from(open_windows).unwrap_or(i64::MAX),
        )?;
        let c = ConstCounter::new(folded);
        let m = encoder.encode_descriptor(
            "audit_folded",
            "Repeated grants counted into an earlier audit row instead of a row of their own",
            None,
            c.metric_type(),
        )?;
        c.encode(m)?;

        let keys = &self.signer.keys().keys;
        let active = self.signer.keys().active(now).ok().map(|k| k.name.clone());
        let expiry = ConstGauge::new(0.0f64);
        let mut m = encoder.encode_descriptor(
            "signing_key_expiry_days",
            "Days until the certificate of each signing key expires (negative: expired)",
            None,
            expiry.metric_type(),
        )?;
        for key in keys {
            let labels = [("key", key.name.as_str()), ("alg", key.alg.jose())];
            ConstGauge::new(days_until(key.not_after, now)).encode(m.encode_family(&labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "signing_key_active",
            "1 for the key that signs new tokens",
            None,
            expiry.metric_type(),
        )?;
        for key in keys {
            let labels = [("key", key.name.as_str())];
            let is_active = active.as_deref() == Some(key.name.as_str());
            ConstGauge::new(i64::from(is_active)).encode(m.encode_family(&labels)?)?;
        }
        gauge(
            &mut encoder,
            "signing_ca_online",
            "1 when berth's CA key is beside the signing keys and berth renews their certificates itself",
            i64::from(crate::token::generate::ca_online(&self.signer.keys().dir)),
        )?;
        if let Some(not_after) = self.tls.as_ref().and_then(|t| t.not_after()) {
            gauge(
                &mut encoder,
                "tls_certificate_expiry_days",
                "Days until the served TLS certificate expires",
                days_until(not_after, now),
            )?;
        }

        let (hits, misses, entries) = self.auth.cache_stats();
        let c = ConstCounter::new(0u64);
        let mut m = encoder.encode_descriptor(
            "credential_cache_lookups",
            "Password checks answered from the credential cache (hit) or by hashing (miss)",
            None,
            c.metric_type(),
        )?;
        for (result, n) in [("hit", hits), ("miss", misses)] {
            ConstCounter::new(n).encode(m.encode_family(&[("result", result)])?)?;
        }
        gauge(
            &mut encoder,
            "credential_cache_entries",
            "Entries in the credential cache",
            i64::try_from(entries).unwrap_or(i64::MAX),
        )?;
        let generation = self.auth.generation();
        if let Some(up) = generation.listening() {
            gauge(
                &mut encoder,
                "generation_listener_up",
                "PostgreSQL: 1 while the authentication generation is kept in memory by its listener, 0 while requests read it from the database",
                i64::from(up),
            )?;
        }
        let c = ConstCounter::new(generation.reads());
        let m = encoder.encode_descriptor(
            "generation_reads",
            "Database readings of the authentication generation made for requests (PostgreSQL: each serves a burst, none while the listener is up; SQLite: none while nothing was committed since the last)",
            None,
            c.metric_type(),
        )?;
        c.encode(m)?;
        gauge(
            &mut encoder,
            "build_info",
            concat!("berth ", env!("CARGO_PKG_VERSION")),
            1i64,
        )
    }
}

/// Renders the counters of `metrics` and the values of `now`, in OpenMetrics
/// text when `openmetrics`, else in the Prometheus text format 0.0.4. Returns
/// the body and its content type.
pub fn render(
    metrics: &Metrics,
    now: Live,
    openmetrics: bool,
) -> Result<(String, &'static str), std::fmt::Error> {
    let mut live = Registry::with_prefix("berth");
    live.register_collector(Box::new(now));
    let mut body = String::with_capacity(8 * 1024);
    if openmetrics {
        use prometheus_client::encoding::text;
        text::encode_registry(&mut body, &metrics.registry)?;
        text::encode_registry(&mut body, &live)?;
        text::encode_eof(&mut body)?;
        Ok((
            body,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ))
    } else {
        use prometheus_client::encoding::prometheus_text;
        prometheus_text::encode(&mut body, &metrics.registry)?;
        prometheus_text::encode(&mut body, &live)?;
        Ok((body, prometheus_text::CONTENT_TYPE))
    }
}
