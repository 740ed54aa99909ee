//! The client address of a request, as policy `ip` rules and the audit record
//! see it: the TCP peer, or the address trusted proxies forwarded (see
//! [`crate::net::proxy`] for which `X-Forwarded-For` entries are believed).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::net::proxy;
use crate::state::AppState;

/// Extractor: the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        // The server always sets the peer; without it (a router driven in a test)
        // the unspecified address matches no `ip` rule.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes());
        Ok(ClientIp(proxy::client_ip(
            peer,
            forwarded,
            &state.config.trusted_proxies,
        )))
    }
}
