//! The accept loop: plain TCP or TLS, HTTP/1.1 and HTTP/2 on one port, explicit
//! limits on request heads, and graceful shutdown with a deadline.
//!
//! Shutdown: when the signal arrives the listener is closed at once (new
//! connections are refused), idle connections are closed, requests in flight run
//! to completion, and after `grace` whatever is left is dropped, so the process
//! always exits in bounded time.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

/// Largest request head (request line plus headers) accepted, in bytes. The
/// URI alone may be up to 64 KiB (the `http` crate's limit), so that berth,
/// not the HTTP layer, answers an over-long query with its own JSON error;
/// the rest leaves room for ordinary headers. Over this: 431, empty body.
pub const MAX_HEAD_BYTES: usize = 96 * 1024;
/// Most header fields in one HTTP/1 request.
pub const MAX_HEADERS: usize = 100;
/// A client must send its whole request head within this time (slow-loris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake must finish within this time.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most concurrent HTTP/2 streams per connection.
pub const MAX_H2_STREAMS: u32 = 128;

/// How one listener serves.
#[derive(Clone)]
pub struct Listener {
    /// Name for logs (`http`, `metrics`).
    pub name: &'static str,
    /// The routes.
    pub router: Router,
    /// TLS, when this listener terminates it.
    pub tls: Option<TlsAcceptor>,
}

/// HTTP/1 and HTTP/2 connection settings, made once per listener.
#[derive(Clone)]
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new() -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_header_size(MAX_HEAD_BYTES)
            // The read buffer must hold a whole head; the exact limit is above.
            .max_buf_size(MAX_HEAD_BYTES + 8192)
            .max_headers(MAX_HEADERS);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(MAX_HEAD_BYTES).unwrap_or(u32::MAX))
            .max_concurrent_streams(MAX_H2_STREAMS);
        Protocols { http1, http2 }
    }
}

/// Accepts on `tcp` until `shutdown` turns true, then drains connections for at
/// most `grace`.
pub async fn run(
    tcp: TcpListener,
    listener: Listener,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) -> std::io::Result<()> {
    let protocols = Protocols::new();
    let graceful = GracefulShutdown::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    let conn = Connection {
                        stream,
                        peer,
                        listener: listener.clone(),
                        protocols: protocols.clone(),
                    };
                    let watcher = graceful.watcher();
                    tokio::spawn(conn.serve(watcher));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, keep serving.
                    tracing::warn!(listener = listener.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    drop(tcp);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(
            listener = listener.name,
            connections = open,
            "listener closed; finishing requests in flight"
        );
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = listener.name,
            grace = ?grace,
            "shutdown timeout reached; closing remaining connections"
        );
    }
    Ok(())
}

/// The HTTP/2 client preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a cleartext connection starts with the HTTP/2 preface (prior
/// knowledge, h2c); looks without consuming.
async fn starts_with_h2_preface(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 24];
    let look = async {
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(n) => n,
                Err(_) => return false,
            };
            let seen = buf.get(..n).unwrap_or_default();
            if n == 0 || !H2_PREFACE.starts_with(seen) {
                return false;
            }
            if n == H2_PREFACE.len() {
                return true;
            }
            // A partial preface: wait for the rest.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(HEADER_READ_TIMEOUT, look)
        .await
        .unwrap_or(false)
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    listener: Listener,
    protocols: Protocols,
}

impl Connection {
    async fn serve(self, watcher: Watcher) {
        let Connection {
            stream,
            peer,
            listener,
            protocols,
        } = self;
        // Token responses are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let router = listener.router;
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().call(req)
        });
        let result = match listener.tls {
            None => {
                let h2 = starts_with_h2_preface(&stream).await;
                serve_io(TokioIo::new(stream), h2, &protocols, service, watcher).await
            }
            Some(acceptor) => {
                let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                serve_io(TokioIo::new(tls), h2, &protocols, service, watcher).await
            }
        };
        if let Err(e) = result {
            // Client resets, malformed requests hyper already answered, timeouts.
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

async fn serve_io<I, S>(
    io: I,
    h2: bool,
    protocols: &Protocols,
    service: S,
    watcher: Watcher,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = axum::body::Body> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if h2 {
        watcher
            .watch(protocols.http2.serve_connection(io, service))
            .await
    } else {
        watcher
            .watch(protocols.http1.serve_connection(io, service))
            .await
    }
}
