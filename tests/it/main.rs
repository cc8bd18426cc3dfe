//! zedi-sync's integration tests, one binary: each module starts the real daemon (and, where a
//! test needs them, a throwaway PostgreSQL, Redis or the AWS API emulator) and talks to it over
//! loopback sockets as a client would. `common` is the harness.

mod common;

mod awareness;
mod awareness_bounds;
mod bench_smoke;
mod cluster;
mod daemon;
mod document_api;
mod documents_at_rest;
mod history;
mod hostile_input;
mod jwt_expiry;
mod limits;
mod memory_bounds;
mod memory_return;
mod operations;
mod placement;
mod postgres;
mod protocol_fixtures;
mod ywebsocket;
