//! The harness every test binary shares, so that a berth process, a database
//! and a CLI run look the same in the http, store, policy CLI and end-to-end
//! suites:
//!
//! - [`proc`]: programs run with a bound, daemons stopped when dropped;
//! - [`cli`]: the berth binary as a command, with a clean environment;
//! - [`server`]: `berth serve` as a child process (start, settings, logs, stop);
//! - [`db`]: a fresh database per test, SQLite or PostgreSQL.
//!
//! A binary includes it with `#[path = "common/mod.rs"] mod common;` and uses
//! what it needs; the rest is unused there, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod cli;
pub mod db;
pub mod proc;
pub mod server;
