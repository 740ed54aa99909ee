//! In-process HTTP tests: the real server on port 0 with a temp database and
//! temp keys, driven over HTTP; issued tokens are verified with the key
//! published at `/.well-known/jwks.json`. Some tests run the real `berth`
//! binary (the CLI, or `berth serve` as a child process) through the shared
//! harness in `tests/common`. One module per concern:
//!
//! - `support`: the in-process test server and HTTP helpers;
//! - `token_get`, `token_post`, `claims`, `accounts`, `live`, `bad_input`,
//!   `reuse`, `page_limits`: the token endpoint;
//! - `machine` (shared fixtures), `robots`, `access_tokens`, `federated`,
//!   `lockout`, `audit_log`, `audit_fold`, `audit_erase`, `serve_logs`,
//!   `request_id`: machine credentials and the audit log;
//! - `generation`: revocations made by another process seen by a running
//!   server (SQLite's WAL index, the PostgreSQL listener);
//! - `ops` (shared fixtures), `metrics`, `client_address`, `head_limits`,
//!   `tls`, `config_files`, `shutdown`, `bounds`, `edge`, `edge_input`,
//!   `login_flood`: operations and the HTTP edge.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

#[path = "http/support.rs"]
mod support;

#[path = "http/ops.rs"]
mod ops;

#[path = "http/machine.rs"]
mod machine;

#[path = "http/robots.rs"]
mod robots;

#[path = "http/access_tokens.rs"]
mod access_tokens;

#[path = "http/federated.rs"]
mod federated;

#[path = "http/audit_log.rs"]
mod audit_log;

#[path = "http/serve_logs.rs"]
mod serve_logs;

#[path = "http/token_get.rs"]
mod token_get;

#[path = "http/token_post.rs"]
mod token_post;

#[path = "http/accounts.rs"]
mod accounts;

#[path = "http/claims.rs"]
mod claims;

#[path = "http/bad_input.rs"]
mod bad_input;

#[path = "http/live.rs"]
mod live;

#[path = "http/metrics.rs"]
mod metrics;

#[path = "http/client_address.rs"]
mod client_address;

#[path = "http/head_limits.rs"]
mod head_limits;

#[path = "http/tls.rs"]
mod tls;

#[path = "http/config_files.rs"]
mod config_files;

#[path = "http/shutdown.rs"]
mod shutdown;

#[path = "http/lockout.rs"]
mod lockout;

#[path = "http/bounds.rs"]
mod bounds;

#[path = "http/edge.rs"]
mod edge;

#[path = "http/edge_input.rs"]
mod edge_input;

#[path = "http/login_flood.rs"]
mod login_flood;

#[path = "http/request_id.rs"]
mod request_id;

#[path = "http/audit_fold.rs"]
mod audit_fold;

#[path = "http/audit_erase.rs"]
mod audit_erase;

#[path = "http/reuse.rs"]
mod reuse;

#[path = "http/conn_bounds.rs"]
mod conn_bounds;

#[path = "http/page_limits.rs"]
mod page_limits;

#[path = "http/generation.rs"]
mod generation;
