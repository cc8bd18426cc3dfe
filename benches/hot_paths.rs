//! Micro-benchmarks of the per-update hot paths, to guide optimisation (issue 8):
//! frame decode, update firewall, update apply, broadcast encode, awareness apply. `cargo bench --bench hot_paths`
//! prints ns per operation (median of 7 timed batches) and the machine. No extra crates: a plain
//! `harness = false` bench with `std::time`, so it builds with the rest of the test targets.

use std::hint::black_box;
use std::time::Instant;

use yrs::{Text, Transact};
use zedi_sync::awareness::{AwarenessLimits, AwarenessTable, Owner, decode_update};
use zedi_sync::document::DocumentState;
use zedi_sync::protocol::{self, Message, SyncMessage, encode_body, prepend_address};

/// Median ns per iteration of `f` over 7 batches of `n` iterations.
fn measure(name: &str, n: u32, mut f: impl FnMut(u32)) {
    let mut samples = Vec::with_capacity(7);
    for batch in 0..7 {
        let start = Instant::now();
        for i in 0..n {
            f(batch * n + i);
        }
        samples.push(start.elapsed().as_nanos() as f64 / f64::from(n));
    }
    samples.sort_by(f64::total_cmp);
    println!("{name:<48} {:>12.0} ns/op", samples[3]);
}

/// `count` successive one-character insertions by one client, as a provider sends them.
fn keystrokes(count: usize) -> Vec<Vec<u8>> {
    let doc = yrs::Doc::with_client_id(42);
    let text = doc.get_or_insert_text("default");
    (0..count)
        .map(|i| {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, i as u32, "x");
            txn.encode_update_v1()
        })
        .collect()
}

fn main() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "machine: {cpu}, {cores} cores; zedi-sync {}",
        env!("CARGO_PKG_VERSION")
    );

    let updates = keystrokes(70_000);
    let frames: Vec<Vec<u8>> = updates
        .iter()
        .map(|u| protocol::encode("notes/team-1", &Message::Sync(SyncMessage::Update(u))))
        .collect();

    measure("decode a keystroke frame", 10_000, |i| {
        black_box(protocol::decode(black_box(&frames[i as usize % frames.len()])).ok());
    });

    let mut state = DocumentState::new();
    measure("apply a keystroke update (growing document)", 10_000, |i| {
        black_box(state.apply_update(&updates[i as usize]).ok());
    });

    // The update firewall alone (it is also inside every apply above), on a keystroke and on
    // a whole 70k-character document as one update (a late joiner's or a reconnect's SyncStep2).
    let limits = zedi_sync::firewall::Limits::default();
    measure("firewall: check a keystroke update", 10_000, |i| {
        black_box(
            zedi_sync::firewall::check_update(
                &updates[i as usize % updates.len()],
                &limits,
                &mut zedi_sync::firewall::EmptyTree,
            )
            .is_ok(),
        );
    });
    let whole = state.encode_state().unwrap_or_default();
    measure("firewall: check a 70k-keystroke document", 50, |_| {
        black_box(
            zedi_sync::firewall::check_update(&whole, &limits, &mut zedi_sync::firewall::EmptyTree)
                .is_ok(),
        );
    });

    let addresses: Vec<String> = vec!["notes/team-1".to_string(); 20];
    measure("encode a broadcast for 20 connections", 10_000, |i| {
        let body = encode_body(&Message::Sync(SyncMessage::Update(
            &updates[i as usize % updates.len()],
        )));
        // The actor encodes once per distinct address; all 20 share one here, as usual.
        let frame = prepend_address(&addresses[0], &body);
        for _ in &addresses {
            black_box(frame.len());
        }
    });

    // What the document actor does when a burst of updates arrived in one mailbox batch: one
    // merged update for every reader instead of one frame per keystroke.
    measure("merge 8 keystroke broadcasts into one", 5_000, |i| {
        let at = (i as usize * 8) % (updates.len() - 8);
        black_box(DocumentState::merge_broadcasts(&updates[at..at + 8]));
    });

    // 50 client ids from one connection: more than a connection may own by default, which is
    // not what this measures.
    let mut table = AwarenessTable::with_limits(AwarenessLimits {
        max_clients_per_connection: 64,
        ..AwarenessLimits::default()
    });
    let states: Vec<Vec<u8>> = (0..1000u64)
        .map(|i| {
            let mut w = zedi_sync::protocol::lib0::Writer::new();
            w.write_var_uint(1)
                .write_var_uint(i % 50)
                .write_var_uint(i / 50 + 1);
            w.write_var_string(
                r##"{"user":{"name":"alice","color":"#ff0000"},"cursor":{"anchor":12,"head":14}}"##,
            );
            w.into_vec()
        })
        .collect();
    measure("decode + apply an awareness update", 10_000, |i| {
        let entries = decode_update(&states[i as usize % states.len()]).unwrap_or_default();
        black_box(table.apply(Owner::Connection(1), &entries, u64::from(i)));
    });

    // The most a client may make the server check per state: 64 KiB (the default bound) of
    // JSON, walked once by the depth scanner and once by serde_json.
    let largest = {
        let item = r#"{"anchor":12,"head":14,"names":["a\"[","b"]},"#;
        let body = item.repeat(65_000 / item.len());
        let mut w = zedi_sync::protocol::lib0::Writer::new();
        w.write_var_uint(1).write_var_uint(1).write_var_uint(1);
        w.write_var_string(&format!("[{}0]", body));
        w.into_vec()
    };
    measure("decode the largest awareness state (64 KiB)", 200, |_| {
        black_box(decode_update(&largest).map(|e| e.len()).ok());
    });

    measure(
        "answer SyncStep1 of an empty client (70k-char doc)",
        50,
        |_| {
            black_box(state.sync_step1_reply(&[0]).ok());
        },
    );
}
