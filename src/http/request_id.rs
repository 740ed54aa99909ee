//! The request id: one per request, in a tracing span around everything logged
//! while serving it, in the audit record, and echoed in the `X-Request-Id`
//! response header.
//!
//! An `X-Request-Id` that arrives is believed only from a `trusted_proxies`
//! peer and only when well formed (1 to 64 characters of `A-Z a-z 0-9 . _ -`);
//! anything else is dropped and berth makes its own, so a client can neither
//! forge another request's id in the audit log nor smuggle text into log
//! lines. tower-http sets, propagates and spans the id; this module decides
//! which ids are believed and how new ones look.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId as TowerRequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::net::proxy;
use crate::state::AppState;

/// The header that carries the id, in and out.
pub const HEADER: &str = "x-request-id";

/// Longest id accepted from a trusted proxy.
pub const MAX_LEN: usize = 64;

/// Whether `value` is an id berth accepts from a trusted proxy.
pub fn well_formed(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_LEN
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Makes new ids: 16 random hex digits.
#[derive(Clone, Copy, Default)]
struct Generate;

impl MakeRequestId for Generate {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<TowerRequestId> {
        HeaderValue::from_str(&new_id())
            .ok()
            .map(TowerRequestId::new)
    }
}

/// Random bytes drawn at a time for request ids: one system call per 64 ids
/// instead of one per request.
const ID_BATCH: usize = 8 * 64;

thread_local! {
    /// This thread's unused random bytes and how many are used.
    static ID_BYTES: std::cell::RefCell<([u8; ID_BATCH], usize)> =
        const { std::cell::RefCell::new(([0; ID_BATCH], ID_BATCH)) };
}

/// A fresh random id.
pub fn new_id() -> String {
    let raw = ID_BYTES.with_borrow_mut(|(bytes, used)| {
        if *used == ID_BATCH {
            if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), bytes).is_err() {
                return None;
            }
            *used = 0;
        }
        let raw: [u8; 8] = bytes[*used..*used + 8].try_into().ok()?;
        *used += 8;
        Some(raw)
    });
    match raw {
        Some(raw) => data_encoding::HEXLOWER.encode(&raw),
        None => String::from("0000000000000000"),
    }
}

/// Drops an incoming id unless a trusted proxy sent it and it is well formed.
async fn screen(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if let Some(value) = req.headers().get(HEADER) {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let believed = proxy::is_trusted(peer, &state.config.trusted_proxies)
            && req.headers().get_all(HEADER).iter().count() == 1
            && well_formed(value.as_bytes());
        if !believed {
            req.headers_mut().remove(HEADER);
        }
    }
    next.run(req).await
}

/// Wraps `router` (outermost): screens the incoming id, sets one, echoes it in
/// the response, and opens the `request` span every log line of the request
/// is recorded in.
pub fn layer(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let name = axum::http::HeaderName::from_static(HEADER);
    router
        .layer(PropagateRequestIdLayer::new(name.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get(HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", id, method = %req.method(), path = req.uri().path())
            }),
        )
        .layer(SetRequestIdLayer::new(name, Generate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), screen))
}

/// Extractor: this request's id (as set by [`layer`]; a fresh one when the
/// router runs without it, as in unit tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let id = parts
            .extensions
            .get::<TowerRequestId>()
            .and_then(|id| id.header_value().to_str().ok())
            .map_or_else(new_id, str::to_owned);
        Ok(RequestId(id))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::{new_id, well_formed};

    #[test]
    fn ids_from_proxies_are_short_and_plain() {
        assert!(well_formed(b"abc-123_x.y"));
        assert!(well_formed(&[b'a'; 64]));
        assert!(!well_formed(&[b'a'; 65]));
        assert!(!well_formed(b""));
        assert!(!well_formed(b"a b"));
        assert!(!well_formed(b"a\"b"));
        assert!(!well_formed("é".as_bytes()));
        assert!(!well_formed(b"line\nbreak"));
    }

    #[test]
    fn new_ids_are_distinct_hex_across_batches_and_threads() {
        let per_thread =
            |_| std::thread::spawn(|| (0..1_000).map(|_| new_id()).collect::<Vec<_>>());
        let threads: Vec<_> = (0..4).map(per_thread).collect();
        let mut all = std::collections::HashSet::new();
        for t in threads {
            for id in t.join().expect("thread") {
                assert_eq!(id.len(), 16, "{id}");
                assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
                assert!(all.insert(id.clone()), "{id} given twice");
            }
        }
        assert_eq!(all.len(), 4_000);
    }
}
