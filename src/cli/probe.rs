//! `berth probe`: asks a running berth whether it is ready to serve, and exits
//! 0 or 1. Container health checks call it, because berth's image holds no
//! shell and no HTTP client of its own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// URL to ask. Default: `/readyz` on the configured `listen` address (over
    /// loopback when berth listens on every interface), https when TLS is on.
    #[arg(long)]
    url: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

/// The address a local probe reaches `listen` at.
fn local_url(config: &Config) -> String {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let ip = match config.listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "{scheme}://{}/readyz",
        SocketAddr::new(ip, config.listen.port())
    )
}

pub async fn run(config: &Config, args: ProbeArgs) -> anyhow::Result<()> {
    let derived = args.url.is_none();
    let url = args.url.unwrap_or_else(|| local_url(config));
    // The derived URL is berth's own listener on this host: its certificate names
    // the public host, not 127.0.0.1, so it is not verified there. The probe
    // sends no credentials. A URL given with --url is verified as usual.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .danger_accept_invalid_certs(derived)
        .build()
        .context("cannot build an HTTP client")?;
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{url}: no answer"))?;
    let status = response.status();
    if status.is_success() {
        println!("{url}: ready");
        Ok(())
    } else {
        bail!("{url}: not ready ({status})")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct NoEnv;
    impl crate::config::Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn an_unspecified_listen_address_is_probed_over_loopback() {
        let mut c = Config::load_with(None, &NoEnv).unwrap();
        c.listen = "0.0.0.0:5001".parse().unwrap();
        assert_eq!(local_url(&c), "http://127.0.0.1:5001/readyz");
        c.listen = "[::]:5002".parse().unwrap();
        assert_eq!(local_url(&c), "http://[::1]:5002/readyz");
        c.listen = "10.1.2.3:5003".parse().unwrap();
        assert_eq!(local_url(&c), "http://10.1.2.3:5003/readyz");
    }
}
