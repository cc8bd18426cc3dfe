//! Sequences of small, mostly-valid Yjs v1 updates through `DocumentState`, the way the document
//! actor applies them, with a late-joiner check after every accepted update.
//!
//! What it generates. The input is not fed to yrs as it is: it drives a small lib0 encoder that
//! writes 2–8 updates in the Yjs v1 format (`varUint(#clients)`, per client `varUint(#structs)
//! varUint(client) varUint(clock)` and the structs, then the delete set). The generator keeps a
//! model of what it wrote before, so that the references in later updates mostly point at real
//! structs:
//! - a pool of 1–4 client ids, mostly small, sometimes huge (2^32, 2^53 and above, u64::MAX), and
//!   now and then a client outside the pool;
//! - per client section a clock that continues where that client stopped, skips ahead (a gap: the
//!   update stays pending), fills the first gap left earlier (with a long struct also overlapping
//!   what waits behind it), restarts at 0, overlaps what was sent, or sits near u32::MAX; now and
//!   then a declared struct or client count that disagrees with what follows;
//! - GC and Skip structs and items of every content kind (Deleted, JSON, Binary, String, Embed,
//!   Format, Type, Any, Doc, and unknown refs) with zero, normal and odd lengths: JSON whose
//!   declared count is the number of strings minus one (what yrs 0.28.1 reads), the number of
//!   strings (what Yjs reads) or neither; Any values (nested maps/arrays, numbers, buffers) with
//!   matching or mismatching counts; nested types (text, array, map, XML, subdoc, undefined,
//!   unknown refs); strings with multi-byte and astral characters, sometimes invalid UTF-8;
//! - origins and right origins that point into earlier structs (inside, at the last unit, one
//!   past the end), at earlier structs of the same update, at the struct itself, forward at the
//!   next struct, at unknown clients or clocks;
//! - without origins, a parent that is a root key, an earlier Type item, a non-type or unknown
//!   item, or an odd parent-info value, with or without a parentSub key;
//! - delete sets over known structs, arbitrary small ranges, empty and huge ranges, unknown
//!   clients, overlapping and unsorted ranges;
//! - besides generated updates, steps that re-send an earlier update (duplicate delivery), send
//!   back the document's own full state (a client's SyncStep2 after syncing), apply a generated
//!   update after 1–3 raw byte mutations, or apply raw bytes taken from the input as they are (the
//!   committed seeds in fuzz/seeds/update_sequence/ use this to replay known findings exactly).
//!
//! Each step runs what the daemon runs for a client update: `contains_update` (the read-only
//! check), `apply_update`, then `sync_step1_reply(&[0])`; after about one step in three the
//! document goes to rest (`DocumentState::rest`), so the next step revives it.
//!
//! Property, after every step:
//! - nothing crashes: no memory error (ASan), no abort, no panic that escapes `DocumentState`;
//! - `apply_update` does not return `Poisoned`: that is a yrs panic `DocumentState` contained, on
//!   which the actor drops the document and reloads it, disconnecting every editor. Updates are
//!   to be refused (`BadUpdate`) before yrs can panic on them;
//! - whenever `apply_update` returned `Ok`, a late joiner can load the document: `encode_state()`
//!   succeeds, the encoding applies to a fresh `DocumentState` with `Ok`, and the fresh document
//!   has the same state vector (clients at clock 0 aside).
//!
//! A violation panics with a message starting `update_sequence finding:` and the hex of every
//! update of the sequence, one a line.
//!
//! yrs panics on some malformed input and `DocumentState` contains those with catch_unwind, as in
//! the daemon; libfuzzer-sys's hook would abort on those contained panics before `Poisoned` comes
//! back, so a silent hook is installed (ZEDI_FUZZ_LOUD=1 shows every panic). A panic that escapes
//! `DocumentState` still reaches libfuzzer-sys's catch_unwind and is reported as a crash.
//!
//! Knobs (environment): ZEDI_FUZZ_TRACE=1 prints each step's update (hex) and what
//! `apply_update` returned, to read a reproducer. ZEDI_FUZZ_ALLOW_POISONED=1 ends a sequence at
//! `Poisoned` without a finding, as the actor does; ZEDI_FUZZ_CRASH_ONLY=1 skips the late-joiner
//! check. Both let the target look past a known finding that is not fixed yet.
//!
//! Input layout, for writing seeds by hand (fuzz/update_sequence_seeds.py does): byte 0 = number
//! of steps - 2 (mod 7); byte 1 = number of pool clients - 1 (mod 4), then one or more bytes per
//! client (a byte below 200 is the client id `byte % 8`); then per step an op byte. Op 240..=255
//! is a raw update: a length byte (255: a u16 little-endian length follows) and that many bytes.
//! Other ops generate an update from the bytes that follow.

#![no_main]

// A crate root's `mod x;` finds x.rs beside it, among the other targets: this inline module puts
// the target's parts in fuzz_targets/update_sequence/ instead.
mod update_sequence {
    pub(crate) mod check;
    pub(crate) mod generator;
    pub(crate) mod input;
    pub(crate) mod lib0;
    pub(crate) mod steps;
}

use libfuzzer_sys::fuzz_target;
use zedi_protocol::document::{DocError, DocumentState};

use self::update_sequence::check::{check_late_joiner, finding, hex};
use self::update_sequence::generator::World;
use self::update_sequence::input::Src;
use self::update_sequence::steps;

static QUIET_PANICS: std::sync::Once = std::sync::Once::new();
/// Where the last (silenced) panic happened and what it said, for the `Poisoned` finding.
static LAST_PANIC: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn remember_panic(info: &std::panic::PanicHookInfo) {
    let what = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_default();
    let at = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    if let Ok(mut last) = LAST_PANIC.lock() {
        *last = format!("{at}: {}", what.lines().next().unwrap_or(""));
    }
}

fuzz_target!(|data: &[u8]| {
    if std::env::var_os("ZEDI_FUZZ_LOUD").is_none() {
        QUIET_PANICS.call_once(|| std::panic::set_hook(Box::new(remember_panic)));
    }
    let trace = std::env::var_os("ZEDI_FUZZ_TRACE").is_some();
    let allow_poisoned = std::env::var_os("ZEDI_FUZZ_ALLOW_POISONED").is_some();
    let crash_only = std::env::var_os("ZEDI_FUZZ_CRASH_ONLY").is_some();
    let mut src = Src::new(data);
    let steps = 2 + src.below(7);
    let mut world = World::new(&mut src);
    let mut state = DocumentState::new();
    let mut history: Vec<Vec<u8>> = Vec::new();
    for step in 0..steps {
        if step >= 2 && src.exhausted() {
            break;
        }
        let update = steps::next_update(&mut src, &mut world, &state, &history);
        history.push(update);
        let update = history.last().unwrap();
        if trace {
            eprintln!("step {step}: {}", hex(update));
        }
        let _ = state.contains_update(update);
        let applied = state.apply_update(update);
        if trace {
            eprintln!("  -> {applied:?}");
        }
        match applied {
            Ok(_) if !crash_only => check_late_joiner(&mut state, &history),
            Ok(_) => {}
            // yrs panicked and DocumentState contained it: the actor drops the document and
            // reloads it from the store, closing every connection to it. That is a finding too
            // (updates are to be refused before yrs can panic on them), unless
            // ZEDI_FUZZ_ALLOW_POISONED=1, which ends the sequence there instead.
            Err(DocError::Poisoned) if allow_poisoned => return,
            Err(DocError::Poisoned) => {
                let panic = LAST_PANIC.lock().map(|p| p.clone()).unwrap_or_default();
                finding(
                    &history,
                    format!(
                        "apply_update returned Poisoned: yrs panicked at {panic} (contained; the document must be reloaded)"
                    ),
                )
            }
            Err(_) => {}
        }
        let _ = state.sync_step1_reply(&[0]);
        // Idle documents go to rest and come back with the next update: about one step in
        // three here, chosen by the update itself so the input layout stays as it was.
        if update.len() % 3 == 0 {
            let _ = state.rest();
        }
    }
});
