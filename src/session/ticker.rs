//! Heartbeats and the shutdown signal for every session of a worker thread, from one task.
//!
//! Each socket used to own a ping interval and a task waiting for shutdown: two boxed futures
//! with their timer, ~300 bytes of an idle socket's ~3 KiB. Here each worker thread keeps one
//! list of its sessions and one timer. The timer ticks eight times per ping interval and each
//! tick serves an eighth of the sessions, so every session still hears from it once per
//! interval, and the pings of 20,000 sockets do not all leave in the same millisecond.

use crate::protocol::CloseCode;
use std::cell::RefCell;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use super::{CloseSocket, SessionActor};

/// Time for a session's heartbeat: ping the client, close it if it has been idle too long.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Heartbeat;

/// Ticks per ping interval; each serves the sessions whose slot falls in its phase.
const PHASES: usize = 8;

#[derive(Default)]
struct Ticker {
    slots: Vec<Option<Addr<SessionActor>>>,
    free: Vec<usize>,
    draining: bool,
}

thread_local! {
    static TICKER: RefCell<Option<Ticker>> = const { RefCell::new(None) };
}

fn shutting_down() -> CloseSocket {
    // 4205: the provider reconnects (through the ALB, to another task) and resyncs.
    CloseSocket {
        code: CloseCode::ResetConnection,
        reason: "server shutting down".into(),
    }
}

/// Puts a session on this thread's ticker (started on first use); returns its slot for
/// [`unregister`]. Must run on the session's own thread (from `Actor::started`).
pub(super) fn register(
    session: Addr<SessionActor>,
    interval: Duration,
    shutdown: &watch::Receiver<bool>,
) -> usize {
    TICKER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let ticker = cell.get_or_insert_with(|| {
            actix_rt::spawn(run(interval, shutdown.clone()));
            Ticker::default()
        });
        if ticker.draining {
            session.do_send(shutting_down());
        }
        match ticker.free.pop() {
            Some(slot) => {
                ticker.slots[slot] = Some(session);
                slot
            }
            None => {
                ticker.slots.push(Some(session));
                ticker.slots.len() - 1
            }
        }
    })
}

/// Takes a stopped session off this thread's ticker.
pub(super) fn unregister(slot: usize) {
    TICKER.with(|cell| {
        if let Some(ticker) = cell.borrow_mut().as_mut()
            && let Some(entry) = ticker.slots.get_mut(slot)
            && entry.take().is_some()
        {
            ticker.free.push(slot);
        }
    });
}

async fn run(interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let step = (interval / PHASES as u32).max(Duration::from_millis(1));
    let mut timer = tokio::time::interval(step);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut phase = 0;
    let mut draining = false;
    loop {
        tokio::select! {
            _ = timer.tick() => {
                TICKER.with(|cell| {
                    if let Some(ticker) = cell.borrow().as_ref() {
                        for session in ticker.slots.iter().skip(phase).step_by(PHASES).flatten() {
                            session.do_send(Heartbeat);
                        }
                    }
                });
                phase = (phase + 1) % PHASES;
            }
            _ = shutdown.wait_for(|closing| *closing), if !draining => {
                draining = true;
                TICKER.with(|cell| {
                    if let Some(ticker) = cell.borrow_mut().as_mut() {
                        ticker.draining = true;
                        for session in ticker.slots.iter().flatten() {
                            session.do_send(shutting_down());
                        }
                    }
                });
            }
        }
    }
}
