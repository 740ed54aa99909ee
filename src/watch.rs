//! Reloading things from disk while serving: polled for changes every so often,
//! and reloaded at once on SIGHUP. Used for policy files and the TLS certificate.

use std::sync::Arc;
use std::time::Duration;

/// Something berth reloads from disk.
pub trait Reload: Send + Sync + 'static {
    /// What it is, for the log ("policy", "TLS certificate").
    fn what(&self) -> &'static str;
    /// Reloads unconditionally; failures are logged and kept by the implementor.
    fn reload_now(&self);
    /// Reloads if the files changed since the last look.
    fn reload_if_changed(&self);
}

/// Watches `item` until the task is dropped: a look every `every`, a reload on
/// SIGHUP. Both run on the blocking pool (they read files).
pub async fn watch<T: Reload>(item: Arc<T>, every: Duration) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let hup_recv = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let item = item.clone();
        tokio::select! {
            _ = tick.tick() => {
                let _ = tokio::task::spawn_blocking(move || item.reload_if_changed()).await;
            }
            _ = hup_recv => {
                tracing::info!("SIGHUP: reloading {}", item.what());
                let _ = tokio::task::spawn_blocking(move || item.reload_now()).await;
            }
        }
    }
}
