//! Name → document actor. The registry is the only place that creates document actors, so two
//! sessions opening the same name always meet in the same actor.
//!
//! Unloading is race-free by construction: a document actor that decides to go first marks
//! itself `Unloading` (it bounces every later `Join`), then sends [`Unregister`] and stops. A
//! session whose `Join` bounced, or whose actor died, simply asks the registry again; the
//! registry never hands out an actor it knows has stopped.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use crate::budget::Pressure;
use crate::cluster::Cluster;
pub use crate::document::Unregister;
use crate::document::{DocumentActor, DocumentConfig, JoinError};
use crate::metrics::Metrics;
use crate::persistence::Persistence;

/// Get (or start) the actor of a document. A document that is not loaded is not started while
/// the memory budget is nearly full ([`JoinError::ServerBusy`]).
#[derive(Message)]
#[rtype(result = "Result<Addr<DocumentActor>, JoinError>")]
pub struct Open {
    pub name: Arc<str>,
    /// The opening session's thread, where the document starts when
    /// `server.document_placement = "opener"`.
    pub near: Option<ArbiterHandle>,
}

pub struct Registry {
    documents: HashMap<Arc<str>, (u64, Addr<DocumentActor>)>,
    next_id: u64,
    /// Threads document actors run on, used round-robin so documents spread over cores; empty
    /// with `document_placement = "opener"`: a document starts on its first session's thread.
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    persistence: Persistence,
    metrics: Arc<Metrics>,
    config: DocumentConfig,
    cluster: Option<Cluster>,
}

impl Registry {
    pub fn new(
        arbiters: Vec<ArbiterHandle>,
        persistence: Persistence,
        metrics: Arc<Metrics>,
        config: DocumentConfig,
        cluster: Option<Cluster>,
    ) -> Self {
        Registry {
            documents: HashMap::new(),
            next_id: 1,
            arbiters,
            next_arbiter: 0,
            persistence,
            metrics,
            config,
            cluster,
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Handler<Open> for Registry {
    type Result = MessageResult<Open>;

    fn handle(&mut self, msg: Open, ctx: &mut Self::Context) -> Self::Result {
        if let Some((_, addr)) = self.documents.get(&msg.name)
            && addr.connected()
        {
            return MessageResult(Ok(addr.clone()));
        }
        let budget = &self.config.budget;
        if budget.pressure() >= Pressure::RefuseDocuments {
            budget.count_shed(crate::budget::ShedReason::DocumentRefused);
            tracing::warn!(document = %msg.name, used = budget.used(), limit = budget.limit(), "document not opened: memory budget nearly full");
            return MessageResult(Err(JoinError::ServerBusy));
        }
        let id = self.next_id;
        self.next_id += 1;
        let name = Arc::clone(&msg.name);
        let persistence = self.persistence.clone();
        let metrics = Arc::clone(&self.metrics);
        let config = self.config.clone();
        let cluster = self.cluster.clone();
        let registry = ctx.address().recipient();
        let make = move |_: &mut Context<DocumentActor>| {
            DocumentActor::new(name, id, persistence, registry, metrics, config, cluster)
        };
        let addr = if self.arbiters.is_empty() {
            match &msg.near {
                Some(near) => DocumentActor::start_in_arbiter(near, make),
                None => DocumentActor::create(make),
            }
        } else {
            let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
            self.next_arbiter = self.next_arbiter.wrapping_add(1);
            DocumentActor::start_in_arbiter(arbiter, make)
        };
        self.documents.insert(msg.name, (id, addr.clone()));
        MessageResult(Ok(addr))
    }
}

/// The actor of a document if it is loaded on this node; never starts one (the document API's
/// deletion must not load what it is about to remove).
#[derive(Message)]
#[rtype(result = "Option<Addr<DocumentActor>>")]
pub struct Loaded {
    pub name: Arc<str>,
}

impl Handler<Loaded> for Registry {
    type Result = Option<Addr<DocumentActor>>;

    fn handle(&mut self, msg: Loaded, _: &mut Self::Context) -> Self::Result {
        self.documents
            .get(&msg.name)
            .map(|(_, addr)| addr.clone())
            .filter(Addr::connected)
    }
}

impl Handler<Unregister> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Self::Context) {
        if self
            .documents
            .get(&msg.name)
            .is_some_and(|(id, _)| *id == msg.id)
        {
            self.documents.remove(&msg.name);
        }
    }
}
