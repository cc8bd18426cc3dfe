//! zedi-sync: a Hocuspocus-compatible Yjs sync daemon built from actix actors.
//!
//! Layout, from the wire inwards:
//! - [`protocol`]: frame encode/decode, pure functions;
//! - [`awareness`]: the y-protocols awareness table, pure;
//! - [`firewall`]: the validator every client Yjs update passes before yrs sees it, pure;
//! - [`session`]: one actor per WebSocket;
//! - [`document`]: one actor per open document, owning its `yrs::Doc` (rules in `DocumentState`);
//! - [`registry`]: name → document actor, race-free against unloading;
//! - [`persistence`]: group commit of updates into a [`store::Store`];
//! - [`auth`]: who may open which document;
//! - [`cluster`]: Redis leases, cross-node relay, heartbeats (when `REDIS_URL` is set);
//! - [`http`]: `/health`, `/metrics`; [`websocket`]: the upgrade and the socket under a session;
//! - [`config`], [`metrics`], [`server`]: settings, Prometheus, start-up and shutdown.

#[cfg(feature = "server")]
pub mod auth;
pub mod awareness;
#[cfg(feature = "server")]
pub mod budget;
#[cfg(feature = "server")]
pub mod cloudwatch;
#[cfg(feature = "server")]
pub mod cluster;
#[cfg(feature = "server")]
pub mod config;
pub mod document;
#[cfg(feature = "server")]
pub mod drain;
pub mod firewall;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod limits;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod persistence;
pub mod protocol;
#[cfg(feature = "server")]
pub mod registry;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod session;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod tls;
#[cfg(feature = "server")]
pub mod websocket;
