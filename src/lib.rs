//! berth: a token authorization server for container registries.
//!
//! A token request flows one way: [`http`] (parse) → [`authn`] (who) → [`policy`]
//! (what) → [`token`] (sign) → [`audit`] (record).

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
