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
//! hyper-util's automatic builder tells HTTP/1.1 from HTTP/2; neither it nor
//! hyper has an idle timeout for HTTP/2, and its protocol detection waits for
//! the first bytes without a deadline, so both deadlines are kept here.
//!
//! Memory per connection is what hyper needs and little more: its HTTP/1
//! reader's 8 KiB buffer (grown only for a head that needs it, up to
//! [`MAX_HEAD_BYTES`] plus 8 KiB, and 8 KiB again once the head is consumed)
//! and its writer's 8 KiB header buffer, hyper's minimum, plus the connection's
//! state and task. Two things used to double it, found with a heap profile of
//! 1,000 keep-alive connections (about 40 KiB each): hyper-util's protocol
//! detection handed hyper's reader a first, 24-byte read, after which the
//! reader's buffer grew to 16 KiB on every connection, so cleartext
//! connections are told apart here by peeking at their first bytes, TLS ones
//! by ALPN ([`sniff`], [`negotiated`]); and the connection's state, moved
//! through the futures that drive it, took room in each of them inside every
//! task, so it is boxed once.
//!
//! Shutdown: when the signal arrives the listener is closed at once (new
//! connections are refused), idle connections are closed, requests in flight run
//! to completion, and after `grace` whatever is left is dropped, so the process
//! always exits in bounded time.
//!
//! (Somewhat over 500 lines: accepting, telling the protocol and driving a
//! connection to its deadlines are one path that reads best in one place.)

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
use hyper_util::server::conn::auto;
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
/// Whether a parsed request head (request line and header fields, counted as
/// HTTP/1 sends them) fits [`MAX_HEAD_BYTES`].
pub fn head_within_limit(parts: &hyper::http::request::Parts) -> bool {
    let line = parts.method.as_str().len() + parts.uri.to_string().len() + 12;
    let fields: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    line + fields <= MAX_HEAD_BYTES
}

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

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/1 and HTTP/2 connection settings, made once per listener and shared by
/// its connections: the same settings three ways, for a connection known to
/// speak HTTP/1.1, one known to speak HTTP/2, and one still to be told apart
/// by hyper-util's automatic builder.
struct Protocols {
    detect: auto::Builder<TokioExecutor>,
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

/// What a connection speaks, as far as its first bytes or ALPN tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaks {
    Http1,
    Http2,
    /// Not known yet: the automatic builder reads the preface.
    Unsure,
}

impl Protocols {
    fn new(connections: &Connections) -> Self {
        let limits = connections.limits();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            // The read buffer bounds the memory a head can take; the exact
            // limit is checked on the parsed head (`head_within_limit`), since
            // hyper-util's builder does not pass hyper's own on.
            .max_buf_size(MAX_HEAD_BYTES + 8192)
            .max_headers(MAX_HEADERS);
        builder
            .http2()
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
            h1: builder.clone().http1_only(),
            h2: builder.clone().http2_only(),
            detect: builder,
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
        }
    }

    fn builder(&self, speaks: Speaks) -> &auto::Builder<TokioExecutor> {
        match speaks {
            Speaks::Http1 => &self.h1,
            Speaks::Http2 => &self.h2,
            Speaks::Unsure => &self.detect,
        }
    }
}

/// Tells a cleartext connection's protocol from the bytes it has sent so far,
/// without consuming them: the HTTP/2 preface (or a part of it) or anything
/// else, which is HTTP/1. `None`: the peer closed before sending anything.
///
/// Why not leave it to hyper-util's automatic builder: it reads the preface's
/// 24 bytes itself and hands them to hyper's HTTP/1 reader as a first, short
/// read, after which that reader's 8 KiB buffer is never empty when it grows,
/// so every HTTP/1 connection ends up holding 16 KiB for reading. Peeking
/// keeps it at 8 KiB. One peek decides: a peer that has sent only part of the
/// preface goes to the automatic builder, which waits for the rest.
async fn sniff(stream: &TcpStream) -> std::io::Result<Option<Speaks>> {
    let mut first = [0u8; H2_PREFACE.len()];
    let n = stream.peek(&mut first).await?;
    let seen = &first[..n];
    Ok(match n {
        0 => None,
        _ if seen != &H2_PREFACE[..n] => Some(Speaks::Http1),
        _ if n == H2_PREFACE.len() => Some(Speaks::Http2),
        _ => Some(Speaks::Unsure),
    })
}

/// A TLS connection's protocol, from ALPN: what was negotiated is binding
/// (RFC 7301); without ALPN the automatic builder reads the preface.
fn negotiated(alpn: Option<&[u8]>) -> Speaks {
    match alpn {
        Some(b"h2") => Speaks::Http2,
        Some(b"http/1.1") => Speaks::Http1,
        _ => Speaks::Unsure,
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
    let protocols = Arc::new(Protocols::new(&listener.connections));
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

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    listener: Listener,
    protocols: Arc<Protocols>,
    stop: watch::Receiver<bool>,
}

/// The answer to a head over [`MAX_HEAD_BYTES`]: 431, empty body, and on
/// HTTP/1 the connection closed.
fn head_too_large(version: hyper::Version) -> hyper::Response<axum::body::Body> {
    let mut res = hyper::Response::new(axum::body::Body::empty());
    *res.status_mut() = hyper::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    if version < hyper::Version::HTTP_2 {
        res.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    res
}

/// Requests on one connection: in progress now, and started so far.
#[derive(Clone, Copy, Default)]
struct Activity {
    active: usize,
    started: u64,
}

/// Marks a request in progress on its connection until dropped.
struct Busy(Arc<watch::Sender<Activity>>);

impl Busy {
    fn start(activity: &Arc<watch::Sender<Activity>>) -> Self {
        activity.send_modify(|a| {
            a.active += 1;
            a.started += 1;
        });
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .send_modify(|a| a.active = a.active.saturating_sub(1));
    }
}

/// What keeps one connection going: the shutdown signal and its activity.
struct Watch {
    stop: watch::Receiver<bool>,
    active: watch::Receiver<Activity>,
    first: Duration,
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
        let (active_tx, active_rx) = watch::channel(Activity::default());
        let active_tx = Arc::new(active_tx);
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let busy = Busy::start(&active_tx);
            let (parts, body) = req.into_parts();
            let too_large = (!head_within_limit(&parts)).then_some(parts.version);
            let response = match too_large {
                None => Ok(router.clone().call(Request::from_parts(parts, body))),
                Some(version) => Err(head_too_large(version)),
            };
            async move {
                let res = match response {
                    Ok(response) => response.await,
                    Err(refusal) => Ok(refusal),
                };
                drop(busy);
                res
            }
        });
        let accepted = tokio::time::Instant::now();
        let mut watch = Watch {
            stop,
            active: active_rx,
            first: protocols.header_read_timeout,
            idle: protocols.idle_timeout,
        };
        let result = match listener.tls {
            None => {
                let mut stop = watch.stop.clone();
                let speaks = tokio::select! {
                    sniffed = tokio::time::timeout(watch.first, sniff(&stream)) => match sniffed {
                        Ok(Ok(Some(speaks))) => speaks,
                        // Closed before sending anything.
                        Ok(Ok(None)) => return,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "connection failed before a request");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "no request within the header read timeout");
                            return;
                        }
                    },
                    () = stopped(&mut stop) => return,
                };
                // The first request's deadline still counts from the accept.
                watch.first = watch.first.saturating_sub(accepted.elapsed());
                serve_io(
                    TokioIo::new(stream),
                    protocols.builder(speaks),
                    service,
                    watch,
                )
                .await
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
                let speaks = negotiated(tls.get_ref().1.alpn_protocol());
                serve_io(TokioIo::new(tls), protocols.builder(speaks), service, watch).await
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
    builder: &auto::Builder<TokioExecutor>,
    service: S,
    watch: Watch,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = hyper::Response<axum::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // On the heap, once: moved through the futures that drive it, the
    // connection's state would take room in each of them (and in every
    // connection's task).
    let conn = Box::pin(builder.serve_connection(io, service));
    drive(conn, watch).await
}

/// Runs `conn` to its end; asks it to finish gracefully (answer what is in
/// progress, take nothing new) at shutdown, when no first request has started
/// within `watch.first` (hyper-util's protocol detection has no deadline of
/// its own), or once it has been idle for `watch.idle`.
async fn drive<C, E>(mut conn: Pin<Box<C>>, mut watch: Watch) -> Result<(), E>
where
    C: Future<Output = Result<(), E>> + Graceful,
{
    let mut closing = false;
    let mut first = watch.active.clone();
    loop {
        tokio::select! {
            result = conn.as_mut() => return result,
            () = stopped(&mut watch.stop), if !closing => {
                conn.as_mut().begin_close();
                closing = true;
            }
            () = no_first_request(&mut first, watch.first), if !closing => {
                tracing::debug!("no request within the header read timeout");
                conn.as_mut().begin_close();
                closing = true;
            }
            () = idle_for(&mut watch.active, watch.idle), if !closing => {
                conn.as_mut().begin_close();
                closing = true;
            }
        }
    }
}

/// A connection that can be asked to finish gracefully.
trait Graceful {
    fn begin_close(self: Pin<&mut Self>);
}

impl<I, S> Graceful for auto::Connection<'_, I, S, TokioExecutor>
where
    S: hyper::service::Service<Request<Incoming>, Response = hyper::Response<axum::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn begin_close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Resolves when `first` has passed without any request having started; never
/// once one has.
async fn no_first_request(active: &mut watch::Receiver<Activity>, first: Duration) {
    let started = tokio::time::timeout(first, async {
        active.wait_for(|a| a.started > 0).await.map(|_| ())
    })
    .await;
    if started.is_err() {
        return;
    }
    std::future::pending::<()>().await;
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        // The server is gone without a signal; the listener drops us anyway.
        std::future::pending::<()>().await;
    }
}

/// Resolves once no request has been in progress for `idle`. A request that
/// starts and ends between two looks at the watch is seen by the count of
/// requests started, so a connection busy with short requests back to back is
/// never taken for idle.
async fn idle_for(active: &mut watch::Receiver<Activity>, idle: Duration) {
    loop {
        if active.wait_for(|a| a.active == 0).await.is_err() {
            std::future::pending::<()>().await;
        }
        let seen = active.borrow().started;
        let busy_again = tokio::time::timeout(idle, async {
            active
                .wait_for(|a| a.active > 0 || a.started != seen)
                .await
                .map(|_| ())
        })
        .await;
        if busy_again.is_err() {
            return;
        }
    }
}
