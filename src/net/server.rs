//! The accept loop: plain TCP or TLS, HTTP/1.1 and HTTP/2 on one port, explicit
//! limits on request heads, connection caps, idle connections closed, and
//! graceful shutdown with a deadline.
//!
//! Each accepted connection is first admitted by [`Connections`]: over
//! `max_connections` or `max_connections_per_address` it is closed at once, so
//! a flood of sockets costs berth no file descriptor for longer than the
//! accept. hyper closes a connection that does not deliver a request head in
//! `header_read_timeout` (for HTTP/1 this also bounds the wait for the next
//! request on a kept-alive connection); this module closes any connection,
//! HTTP/1 or HTTP/2, that has had no request in progress for `idle_timeout`.
//! Neither hyper nor hyper-util has an idle timeout for HTTP/2, and hyper-util's
//! automatic protocol detection waits for the preface without a deadline, so
//! both are done here.
//!
//! Shutdown: when the signal arrives the listener is closed at once (new
//! connections are refused), idle connections are closed, requests in flight run
//! to completion, and after `grace` whatever is left is dropped, so the process
//! always exits in bounded time.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use super::limits::Connections;

/// Largest request head (request line plus headers) accepted, in bytes. The
/// URI alone may be up to 64 KiB (the `http` crate's limit), so that berth,
/// not the HTTP layer, answers an over-long query with its own JSON error;
/// the rest leaves room for ordinary headers. Over this: 431, empty body.
pub const MAX_HEAD_BYTES: usize = 96 * 1024;
/// Most header fields in one HTTP/1 request.
pub const MAX_HEADERS: usize = 100;
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
    /// The open connections and their caps and timeouts.
    pub connections: Arc<Connections>,
}

/// HTTP/1 and HTTP/2 connection settings, made once per listener.
#[derive(Clone)]
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl Protocols {
    fn new(connections: &Connections) -> Self {
        let limits = connections.limits();
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(MAX_HEAD_BYTES)
            // The read buffer must hold a whole head; the exact limit is above.
            .max_buf_size(MAX_HEAD_BYTES + 8192)
            .max_headers(MAX_HEADERS);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(MAX_HEAD_BYTES).unwrap_or(u32::MAX))
            .max_concurrent_streams(MAX_H2_STREAMS)
            // Streams a client opens and resets before berth answers them
            // (the "rapid reset" flood): past this many, GOAWAY.
            .max_pending_accept_reset_streams(Some(20))
            // A peer that stops answering pings is gone: free its slot.
            .keep_alive_interval(Some(limits.idle_timeout))
            .keep_alive_timeout(limits.header_read_timeout);
        Protocols {
            http1,
            http2,
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
        }
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
    let protocols = Protocols::new(&listener.connections);
    // Every connection task holds a clone of `open_tx`; when all are gone,
    // `open_rx` yields `None`: the drain is complete.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let mut warned = false;
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    let permit = match listener.connections.admit(peer.ip()) {
                        Ok(permit) => permit,
                        Err(why) => {
                            // Closed at once: no descriptor is held for it.
                            drop(stream);
                            if !warned {
                                warned = true;
                                tracing::warn!(
                                    listener = listener.name,
                                    cap = ?why,
                                    "connection cap reached; refusing connections (counted in berth_connections_refused_total)"
                                );
                            }
                            continue;
                        }
                    };
                    let conn = Connection {
                        stream,
                        peer,
                        listener: listener.clone(),
                        protocols: protocols.clone(),
                        stop: shutdown.clone(),
                    };
                    let open = open_tx.clone();
                    tokio::spawn(async move {
                        conn.serve().await;
                        drop(permit);
                        drop(open);
                    });
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
    drop(open_tx);
    let open = listener.connections.open();
    if open > 0 {
        tracing::info!(
            listener = listener.name,
            connections = open,
            "listener closed; finishing requests in flight"
        );
    }
    if tokio::time::timeout(grace, open_rx.recv()).await.is_err() {
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
/// knowledge, h2c); looks without consuming. `None` when the client sent
/// nothing conclusive within `timeout`: the connection is then closed, as
/// hyper would for a request head that does not arrive.
async fn starts_with_h2_preface(stream: &TcpStream, timeout: Duration) -> Option<bool> {
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
    tokio::time::timeout(timeout, look).await.ok()
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    listener: Listener,
    protocols: Protocols,
    stop: watch::Receiver<bool>,
}

/// Marks a request in progress on its connection until dropped.
struct Busy(Arc<watch::Sender<usize>>);

impl Busy {
    fn start(active: &Arc<watch::Sender<usize>>) -> Self {
        active.send_modify(|n| *n += 1);
        Busy(active.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// What keeps one connection going: the shutdown signal and its activity.
struct Watch {
    stop: watch::Receiver<bool>,
    active: watch::Receiver<usize>,
    idle: Duration,
}

impl Connection {
    async fn serve(self) {
        let Connection {
            stream,
            peer,
            listener,
            protocols,
            stop,
        } = self;
        // Token responses are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let router = listener.router;
        let (active_tx, active_rx) = watch::channel(0usize);
        let active_tx = Arc::new(active_tx);
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let busy = Busy::start(&active_tx);
            let response = router.clone().call(req);
            async move {
                let res = response.await;
                drop(busy);
                res
            }
        });
        let watch = Watch {
            stop,
            active: active_rx,
            idle: protocols.idle_timeout,
        };
        let result = match listener.tls {
            None => {
                let Some(h2) = starts_with_h2_preface(&stream, protocols.header_read_timeout).await
                else {
                    tracing::debug!(%peer, "no request within the header read timeout");
                    return;
                };
                serve_io(TokioIo::new(stream), h2, &protocols, service, watch).await
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
                serve_io(TokioIo::new(tls), h2, &protocols, service, watch).await
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
    watch: Watch,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = axum::body::Body> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if h2 {
        let conn = protocols.http2.serve_connection(io, service);
        drive(conn, |c| c.graceful_shutdown(), watch).await
    } else {
        let conn = protocols.http1.serve_connection(io, service);
        drive(conn, |c| c.graceful_shutdown(), watch).await
    }
}

/// Runs `conn` to its end; asks it to finish gracefully (answer what is in
/// progress, take nothing new) at shutdown or once it has been idle for
/// `watch.idle`.
async fn drive<C, E>(conn: C, graceful: fn(Pin<&mut C>), mut watch: Watch) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => return result,
            () = stopped(&mut watch.stop), if !closing => {
                graceful(conn.as_mut());
                closing = true;
            }
            () = idle_for(&mut watch.active, watch.idle), if !closing => {
                graceful(conn.as_mut());
                closing = true;
            }
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        // The server is gone without a signal; the listener drops us anyway.
        std::future::pending::<()>().await;
    }
}

/// Resolves once no request has been in progress for `idle`.
async fn idle_for(active: &mut watch::Receiver<usize>, idle: Duration) {
    loop {
        if active.wait_for(|n| *n == 0).await.is_err() {
            std::future::pending::<()>().await;
        }
        let busy_again = tokio::time::timeout(idle, async {
            active.wait_for(|n| *n > 0).await.map(|_| ())
        })
        .await;
        if busy_again.is_err() {
            return;
        }
    }
}
