//! berth: a token authorization server for container registries.
//!
//! A token request flows one way: [`http`] (parse) → [`authn`] (who, and with
//! `Authenticated::authorize` what: the [`policy`] decision narrowed by the
//! token's own limits) → [`token`] (sign, or reuse a recent signature) →
//! [`audit`] (record). The handler in `http::token` only calls these in order;
//! shared names live in [`types`], below all of them.

pub mod app;
pub mod audit;
pub mod authn;
pub mod cli;
pub mod config;
pub mod custody;
pub mod doctor;
pub mod http;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod scope;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod types;
pub mod watch;
