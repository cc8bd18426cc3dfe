//! zedi-sync: a Hocuspocus-compatible Yjs sync daemon built from actix actors.
//!
//! Layout, from the wire inwards:
//! - [`protocol`]: frame encode/decode, pure functions;
//! - [`awareness`]: the y-protocols awareness table, pure;
//! - [`session`]: one actor per WebSocket;
//! - [`document`]: one actor per open document, owning its `yrs::Doc` (rules in `DocumentState`);
//! - [`registry`]: name → document actor, race-free against unloading;
//! - [`persistence`]: group commit of updates into a [`store::Store`];
//! - [`auth`]: who may open which document;
//! - [`cluster`]: Redis leases, cross-node relay, heartbeats (when `REDIS_URL` is set);
//! - [`http`]: the WebSocket upgrade, `/health`, `/metrics`;
//! - [`config`], [`metrics`], [`server`]: settings, Prometheus, start-up and shutdown.

pub mod auth;
pub mod awareness;
pub mod cloudwatch;
pub mod cluster;
pub mod config;
pub mod document;
pub mod drain;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod persistence;
pub mod protocol;
pub mod registry;
pub mod server;
pub mod session;
pub mod store;
pub mod tls;
