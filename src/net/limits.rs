//! Edge limits: the timeouts every connection and request lives under, and the
//! caps on how many connections are open at once, in total and per client
//! address. It owns the settings ([`EdgeLimits`]), the admission of accepted
//! connections ([`Connections`]) and their metrics ([`ConnectionMetrics`]).
//!
//! It does not own the timers themselves: hyper enforces the request-head
//! timeout, tower-http the body and whole-request timeouts (see
//! [`crate::http`]), and [`super::server`] closes idle connections.
//!
//! Why per address: without it one client can hold every connection slot
//! (thousands of idle sockets) and starve everybody else. The TCP peer is the
//! only address nobody can forge, so that is what is counted; IPv6 peers are
//! counted per /64, the block one host usually gets. Trusted proxies
//! (`trusted_proxies`) carry many clients on their connections and only count
//! towards the total.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::proxy;

/// The edge settings (`header_read_timeout`, `body_read_timeout`,
/// `request_timeout`, `idle_timeout`, `max_connections`,
/// `max_connections_per_address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    /// A client must send a whole request head within this time, counted from
    /// when berth starts waiting for it (a new connection, or an HTTP/1
    /// connection that has just answered a request).
    pub header_read_timeout: Duration,
    /// Longest pause while receiving a request body; a stalled body is then
    /// answered 408 and the connection closed.
    pub body_read_timeout: Duration,
    /// Longest time from request head to response; past it 408.
    pub request_timeout: Duration,
    /// A connection with no request in progress is closed after this long.
    pub idle_timeout: Duration,
    /// Most open connections per listener.
    pub max_connections: usize,
    /// Most open connections per client address (IPv6: per /64) per listener.
    pub max_connections_per_address: usize,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_connections_per_address: 256,
        }
    }
}

impl EdgeLimits {
    /// Checks the settings against each other; the error names the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let hour = Duration::from_secs(3600);
        for (key, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("request_timeout", self.request_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if d.is_zero() || d > hour {
                return Err((key, "must be between 1s and 1h".into()));
            }
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(("max_connections", "must be between 1 and 1000000".into()));
        }
        if !(1..=self.max_connections).contains(&self.max_connections_per_address) {
            return Err((
                "max_connections_per_address",
                "must be between 1 and max_connections".into(),
            ));
        }
        Ok(())
    }
}

type ListenerLabel = [(&'static str, &'static str); 1];
type ReasonLabels = [(&'static str, &'static str); 2];

/// Connection metrics, per listener: open connections, the configured caps
/// and the connections refused because a cap was reached.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    open: Family<ListenerLabel, Gauge>,
    limit: Family<ReasonLabels, Gauge>,
    refused: Family<ReasonLabels, Counter>,
}

impl ConnectionMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections_open",
            "Open client connections, by listener",
            self.open.clone(),
        );
        registry.register(
            "connections_limit",
            "Configured connection caps, by listener and scope (total, per_address)",
            self.limit.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once because a cap was reached, by listener and cap",
            self.refused.clone(),
        );
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` reached.
    Total,
    /// `max_connections_per_address` reached for this client.
    PerAddress,
}

impl Refused {
    fn as_str(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerAddress => "per_address",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// The open connections of one listener; admits or refuses new ones.
///
/// The per-address map holds only addresses with an open connection, so it
/// never has more than `max_connections` entries.
#[derive(Debug)]
pub struct Connections {
    listener: &'static str,
    limits: EdgeLimits,
    exempt: Vec<IpNet>,
    counts: Mutex<Counts>,
    metrics: ConnectionMetrics,
}

/// One admitted connection; dropping it frees its slot.
#[derive(Debug)]
pub struct Permit {
    owner: Arc<Connections>,
    key: Option<IpAddr>,
}

/// The per-address key of a peer: the address itself, an IPv6 address's /64.
fn address_key(peer: IpAddr) -> IpAddr {
    match proxy::canonical(peer) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl Connections {
    /// Tracks the connections of `listener` under `limits`; peers in `exempt`
    /// (trusted proxies) are not capped per address.
    pub fn new(
        listener: &'static str,
        limits: EdgeLimits,
        exempt: Vec<IpNet>,
        metrics: ConnectionMetrics,
    ) -> Arc<Self> {
        let cap = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        metrics
            .limit
            .get_or_create(&[("listener", listener), ("scope", "total")])
            .set(cap(limits.max_connections));
        metrics
            .limit
            .get_or_create(&[("listener", listener), ("scope", "per_address")])
            .set(cap(limits.max_connections_per_address));
        metrics.open.get_or_create(&[("listener", listener)]).set(0);
        Arc::new(Connections {
            listener,
            limits,
            exempt,
            counts: Mutex::new(Counts::default()),
            metrics,
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &EdgeLimits {
        &self.limits
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every update
        // is a single increment or decrement.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.counts().total
    }

    /// Admits a connection from `peer`, or says which cap refuses it.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Permit, Refused> {
        let key = (!proxy::is_trusted(peer, &self.exempt)).then(|| address_key(peer));
        let verdict = {
            let mut counts = self.counts();
            let per = key.map_or(0, |k| counts.by_address.get(&k).copied().unwrap_or(0));
            if counts.total >= self.limits.max_connections {
                Err(Refused::Total)
            } else if per >= self.limits.max_connections_per_address {
                Err(Refused::PerAddress)
            } else {
                if let Some(k) = key {
                    *counts.by_address.entry(k).or_insert(0) += 1;
                }
                counts.total += 1;
                Ok(counts.total)
            }
        };
        match verdict {
            Ok(open) => {
                self.set_open(open);
                Ok(Permit {
                    owner: self.clone(),
                    key,
                })
            }
            Err(why) => {
                self.metrics
                    .refused
                    .get_or_create(&[("listener", self.listener), ("reason", why.as_str())])
                    .inc();
                Err(why)
            }
        }
    }

    fn set_open(&self, open: usize) {
        self.metrics
            .open
            .get_or_create(&[("listener", self.listener)])
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    fn release(&self, key: Option<IpAddr>) {
        let open = {
            let mut counts = self.counts();
            counts.total = counts.total.saturating_sub(1);
            if let Some(k) = key {
                if let Some(n) = counts.by_address.get_mut(&k) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        counts.by_address.remove(&k);
                    }
                }
            }
            counts.total
        };
        self.set_open(open);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.owner.release(self.key);
    }
}

/// The soft limit on open file descriptors of this process, where the system
/// tells it (Linux `/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Warns when the process may run out of file descriptors before
/// `max_connections` is reached (each connection is one descriptor, and the
/// database, keys and logs need some more).
pub fn warn_if_files_short(limits: &EdgeLimits, listeners: usize) {
    let Some(soft) = open_files_limit() else {
        return;
    };
    let needed = limits
        .max_connections
        .saturating_mul(listeners)
        .saturating_add(64);
    if u64::try_from(needed).unwrap_or(u64::MAX) > soft {
        tracing::warn!(
            open_files_limit = soft,
            max_connections = limits.max_connections,
            "the open-files limit is below max_connections plus headroom; raise it (ulimit -n, LimitNOFILE=) or lower max_connections"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn limits(total: usize, per: usize) -> EdgeLimits {
        EdgeLimits {
            max_connections: total,
            max_connections_per_address: per,
            ..EdgeLimits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_per_address_and_in_total_and_frees_on_drop() {
        let proxy: IpNet = "10.0.0.9/32".parse().unwrap();
        let c = Connections::new("t", limits(5, 2), vec![proxy], ConnectionMetrics::default());
        let a1 = c.admit(ip("192.0.2.1")).unwrap();
        let _a2 = c.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(c.admit(ip("192.0.2.1")).unwrap_err(), Refused::PerAddress);
        // The same IPv6 /64 is one client.
        let _b1 = c.admit(ip("2001:db8::1")).unwrap();
        let _b2 = c.admit(ip("2001:db8::ffff:2")).unwrap();
        assert_eq!(c.admit(ip("2001:db8::3")).unwrap_err(), Refused::PerAddress);
        // A trusted proxy is only capped by the total.
        let _p = c.admit(ip("10.0.0.9")).unwrap();
        assert_eq!(c.admit(ip("10.0.0.9")).unwrap_err(), Refused::Total);
        assert_eq!(c.admit(ip("198.51.100.1")).unwrap_err(), Refused::Total);
        assert_eq!(c.open(), 5);
        drop(a1);
        assert_eq!(c.open(), 4);
        let _a3 = c.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(c.counts().by_address.len(), 2);
    }

    #[test]
    fn settings_are_checked() {
        assert!(EdgeLimits::default().check().is_ok());
        assert_eq!(
            limits(10, 11).check().unwrap_err().0,
            "max_connections_per_address"
        );
        assert_eq!(limits(0, 0).check().unwrap_err().0, "max_connections");
        let zero = EdgeLimits {
            body_read_timeout: Duration::ZERO,
            ..EdgeLimits::default()
        };
        assert_eq!(zero.check().unwrap_err().0, "body_read_timeout");
    }
}
