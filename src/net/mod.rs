//! The network edge: the accept loop with TLS, HTTP/1.1 and HTTP/2 and graceful
//! shutdown ([`server`]), timeouts and connection caps ([`limits`]), reloadable certificates ([`tls`]), and which address a
//! request really comes from behind trusted proxies ([`proxy`]).
//!
//! Nothing here knows about tokens or policy; routes come from [`crate::http`].

pub mod limits;
pub mod proxy;
pub mod server;
pub mod tls;
