//! zedi-sync: a Hocuspocus-compatible Yjs sync daemon built from actix actors.
//!
//! Layout, from the wire inwards:
//! - [`protocol`], [`awareness`], [`firewall`] and the rules of [`document::DocumentState`]
//!   are the `zedi-protocol` crate (pure, no I/O), re-exported here;
//! - [`session`]: one actor per WebSocket;
//! - [`document`]: one actor per open document, owning its `yrs::Doc` (rules in `DocumentState`);
//! - [`registry`]: name → document actor, race-free against unloading;
//! - [`persistence`]: group commit of updates into a [`store::Store`];
//! - [`auth`]: who may open which document;
//! - [`cluster`]: Redis leases, cross-node relay, heartbeats (when `REDIS_URL` is set);
//! - [`http`]: `/health`, `/metrics`; [`websocket`]: the upgrade and the socket under a session;
//! - [`webhooks`]: document events POSTed to a receiver, as Hocuspocus's webhook extension does;
//! - [`config`], [`metrics`], [`server`]: settings, Prometheus, start-up and shutdown.

pub mod api;
pub mod auth;
pub mod backoff;
pub mod budget;
pub mod cloudwatch;
pub mod cluster;
pub mod config;
pub mod document;
pub mod drain;
pub mod history;
pub mod http;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod persistence;
pub mod registry;
pub mod server;
pub mod session;
pub mod store;
pub mod tls;
pub mod values;
pub mod webhooks;
pub mod websocket;

// The sans-IO core, under the paths the daemon's modules and the tests have always used.
pub use zedi_protocol::{awareness, firewall, protocol};
