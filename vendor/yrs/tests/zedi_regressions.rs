//! Regression tests for hostile-input fixes carried by zedi-sync on top of
//! yrs 0.28.1 (see PATCHES.md in the crate root).

use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, Map, ReadTxn, StateVector, Transact, Update};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Apply each update (hex) in order to one fresh doc, the way the daemon does; decode errors
/// and apply errors are fine, crashes are not. After each update the document state (which
/// includes pending updates) is encoded as a fresh client would request it, and must decode.
fn apply_all(doc: &Doc, updates: &[&str]) {
    for u in updates {
        if let Ok(update) = Update::decode_v1(&hex(u)) {
            let mut txn = doc.transact_mut();
            let _ = txn.apply_update(update);
        }
        check_state_decodes(doc);
    }
}

fn check_state_decodes(doc: &Doc) {
    let txn = doc.transact();
    // `encode_state_as_update_*` re-decodes the pending update to merge it in (and falls back
    // to leaving it out when that fails), so check that step on its own too.
    if let Some(pending) = txn.store().pending_update() {
        let v1 = pending.update.encode_v1();
        Update::decode_v1(&v1).expect("pending update must re-decode (v1)");
        let v2 = pending.update.encode_v2();
        Update::decode_v2(&v2).expect("pending update must re-decode (v2)");
        let state = txn.encode_diff_v1(&StateVector::default());
        let merged = yrs::merge_updates_v1([state, v1]).expect("pending update must merge");
        Update::decode_v1(&merged).expect("merged state must decode");
    }
    let v1 = txn.encode_state_as_update_v1(&StateVector::default());
    Update::decode_v1(&v1).expect("v1 document state must decode");
    let v2 = txn.encode_state_as_update_v2(&StateVector::default());
    Update::decode_v2(&v2).expect("v2 document state must decode");
}

/// A ContentJSON item (count 0, then bytes that parse as a string) whose right origin is
/// itself stays pending; encoding the state re-decodes the pending update, which yrs could not
/// decode again (`merge_pending_v1`: `unwrap()` on `EndOfBuffer`).
#[test]
fn pending_merge_self_right_origin() {
    let doc = Doc::new();
    apply_all(&doc, &["01020000420000000100010000000000"]);
}

/// ContentJSON whose declared count is 0 but which is followed by bytes that look like a
/// string: yrs used to read count+1 strings.
#[test]
fn content_json_reads_declared_count() {
    let doc = Doc::new();
    apply_all(&doc, &["0101a1c439000201086a736f6e726f6f7400017800"]);
}

/// encode(decode(x)) must be byte-identical for ContentJSON, in an update and in the state of
/// a document that integrated it.
#[test]
fn content_json_roundtrip_is_byte_identical() {
    // 1 client (5), 1 block at clock 0: ContentJSON (info 0x02) under root "r",
    // count 2: `"a"` and `1`; empty delete set.
    let bytes = hex("01010500020101720203226122013100");
    let update = Update::decode_v1(&bytes).unwrap();
    assert_eq!(update.encode_v1(), bytes);
    let doc = Doc::new();
    doc.transact_mut().apply_update(update).unwrap();
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    assert_eq!(state, bytes);
    check_state_decodes(&doc);
}

/// The state of a doc whose store holds Skip blocks (holes) must encode in v2: Skip lengths
/// were written with `write_len` (the v2 length stream) but read with `read_var`.
#[test]
fn v2_state_with_skips_decodes() {
    let doc = Doc::new();
    apply_all(&doc, &["020200000001000103030100020a02000200"]);
}

/// ContentBinary in v2: `EncoderV2::write_all` length-prefixed the raw bytes, so the length
/// was written twice.
#[test]
fn v2_binary_content_roundtrip() {
    // client 1, clock 0: ContentBinary [0xcc] under root "a"
    let update = Update::decode_v1(&hex("010101000301016101cc00")).unwrap();
    let v2 = update.encode_v2();
    let decoded = Update::decode_v2(&v2).expect("v2 must decode");
    assert_eq!(decoded.encode_v1(), hex("010101000301016101cc00"));
}

/// Replays a sequence, printing each update, the store and the encoded state:
/// `UPDATES=hex,hex,... cargo test --test zedi_regressions replay_sequence -- --ignored --nocapture`
#[test]
#[ignore]
fn replay_sequence() {
    let list: Vec<String> = std::env::var("UPDATES")
        .unwrap()
        .split(',')
        .map(|s| s.to_string())
        .collect();
    let doc = Doc::new();
    for u in list {
        let upd = Update::decode_v1(&hex(&u));
        println!("update {u}: {:?}", upd);
        if let Ok(update) = upd {
            let mut txn = doc.transact_mut();
            let r = txn.apply_update(update);
            println!("  -> {:?}", r);
            println!("  store: {:?}", txn.store());
            let v1 = txn.encode_state_as_update_v1(&StateVector::default());
            println!("  v1 state: {:02x?} -> {:?}", v1, Update::decode_v1(&v1));
            let v2 = txn.encode_state_as_update_v2(&StateVector::default());
            println!("  v2 state: {:02x?} -> {:?}", v2, Update::decode_v2(&v2));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile updates that broke integration invariants (PATCHES.md #1, #2, #7-#10).

/// The second update's item has its origin inside its own clock range; excluding the range the
/// doc already has splits it, and the dropped half was still linked from the kept one
/// (use-after-free in `Update::missing_dependency`, SIGSEGV).
#[test]
fn segv_missing_dependency_self_reference() {
    let doc = Doc::new();
    apply_all(
        &doc,
        &[
            "020200000001000103030100020a02000200",
            "01020300840301030000004100000000",
        ],
    );
}

/// Blocks of one client listed twice (going backwards), and clocks running past u32::MAX, used
/// to reach `unreachable!()` / arithmetic overflow in the integration code.
#[test]
fn decode_rejects_duplicate_client_and_clock_overflow() {
    use yrs::encoding::read::{Error, MalformedKind};
    // client 3 at clock 4, then client 3 again at clock 2
    let dup = hex("0201030423010162016b000303020003a4010003616263c1020801030100");
    assert!(matches!(
        Update::decode_v1(&dup),
        Err(Error::Malformed(MalformedKind::DuplicateClient))
    ));
    // client 1: a GC of length 5 at clock u32::MAX - 1
    let overflow = hex("010101feffffff0f000500");
    assert!(matches!(
        Update::decode_v1(&overflow),
        Err(Error::Malformed(MalformedKind::ClockOverflow))
    ));
    // delete set range past u32::MAX
    let ds_overflow = hex("00010101feffffff0f05");
    assert!(matches!(
        Update::decode_v1(&ds_overflow),
        Err(Error::Malformed(MalformedKind::ClockOverflow))
    ));
}

/// A block at a clock >= 2^31: the offset to the local clock was computed in i32.
#[test]
fn block_at_clock_past_2_pow_31() {
    let doc = Doc::new();
    apply_all(
        &doc,
        &[
            "0101058080808008000100", // GC at 5:2^31
            "000105010301",           // delete 5:3
        ],
    );
    let sv = doc.transact().state_vector();
    assert_eq!(sv.get(&yrs::block::ClientID::new(5)), 0); // hole before it: nothing known
}

/// Splitting a GC/Skip block of an update left the left part at full length, so exclusion of
/// already-known ranges missed and `BlockStore::push` underflowed.
#[test]
fn exclude_splits_gc_blocks() {
    let doc = Doc::new();
    apply_all(
        &doc,
        &[
            "010102054102000101010200030401",
            "0102020203010161020e3d0400030202c3a90200020401030103010601",
            "0202000102010161020322732203227322000202020100038703000600",
        ],
    );
}

/// Deleting both halves of a string item split inside a surrogate pair: the halves' UTF-8
/// length is larger than the original's, and the parent's counter underflowed.
#[test]
fn surrogate_split_then_delete() {
    let doc = Doc::new();
    apply_all(
        &doc,
        &[
            "020200050a01a80200037e7e7e010104040101610561f09f988001010203030601",
            "01020200040101610378797a4701040301700203010101020202010101",
            "01010302a40305036162630103010802",
        ],
    );
}

/// An update reusing a known ID with different content: the part that is not excluded gets
/// an origin in another branch than its explicit parent, and was linked into that branch's
/// list while being counted in its own (counter underflow, cross-type squashing).
#[test]
fn item_with_origin_in_other_branch_is_collected() {
    let doc = Doc::new();
    apply_all(
        &doc,
        &[
            "0202020005000206013105010161027b7d0201010401016201614102080302030208010803030201010101",
            "02030101040101610378797a06010162016901310701016100010002a600090169013100",
            "01030202460208016204747275650101016101030001000001010203010801",
            "010203038402050261628700030201010205010002",
            "0103000184010702c3a90801016203787f7e0801016201780203010801030201020303",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Random sequences of small structured (well-formed, Yjs v1) updates. Each sequence is applied
// to one fresh doc; after every update the state (v1 and v2, with pending data) must encode to
// bytes that decode again, and the doc must survive being read. Seeded and deterministic:
// ZEDI_FUZZ_ITERS / ZEDI_FUZZ_SEED scale it up for a longer local run (ideally under ASan or
// valgrind, since a memory error need not crash).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn var(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn string(buf: &mut Vec<u8>, s: &str) {
    var(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

fn random_id(rng: &mut Rng, buf: &mut Vec<u8>) {
    var(buf, rng.below(4));
    var(
        buf,
        if rng.chance(2) {
            u32::MAX as u64 - rng.below(3)
        } else {
            rng.below(10)
        },
    );
}

/// A block length: small, rarely close to `u32::MAX`.
fn random_len(rng: &mut Rng) -> u64 {
    if rng.chance(2) {
        u32::MAX as u64 - rng.below(3)
    } else {
        1 + rng.below(3)
    }
}

fn random_content(rng: &mut Rng, buf: &mut Vec<u8>, content_ref: u8) {
    const STRINGS: &[&str] = &["a", "ab", "abc", "é", "a😀", "😀b", "xyz"];
    match content_ref {
        1 => var(buf, random_len(rng)), // deleted
        2 => {
            // JSON
            let n = 1 + rng.below(2);
            var(buf, n);
            for _ in 0..n {
                string(
                    buf,
                    ["1", "\"s\"", "null", "undefined"][rng.below(4) as usize],
                );
            }
        }
        3 => {
            // binary
            let n = rng.below(3);
            var(buf, n);
            for _ in 0..n {
                buf.push(rng.below(256) as u8);
            }
        }
        4 => string(buf, STRINGS[rng.below(STRINGS.len() as u64) as usize]),
        5 => string(buf, ["{}", "1", "{\"a\":1}"][rng.below(3) as usize]), // embed
        6 => {
            // format
            string(buf, ["b", "i"][rng.below(2) as usize]);
            string(buf, ["true", "null", "1"][rng.below(3) as usize]);
        }
        7 => {
            // type
            let type_ref = rng.below(7);
            var(buf, type_ref);
            if type_ref == 3 || type_ref == 5 {
                string(buf, "p");
            }
        }
        8 => {
            // any
            let n = 1 + rng.below(3);
            var(buf, n);
            for _ in 0..n {
                buf.push([126u8, 120, 121, 127][rng.below(4) as usize]);
            }
        }
        9 => {
            // subdocument: guid, options
            string(buf, ["g", "h"][rng.below(2) as usize]);
            if rng.chance(50) {
                buf.extend_from_slice(&[118, 0]); // {}
            } else {
                buf.extend_from_slice(&[118, 1, 2, b'g', b'c', 121]); // {gc: false}
            }
        }
        _ => unreachable!(),
    }
}

fn random_update(rng: &mut Rng) -> Vec<u8> {
    let mut buf = Vec::new();
    let clients = 1 + rng.below(2);
    var(&mut buf, clients);
    for _ in 0..clients {
        let blocks = 1 + rng.below(3);
        var(&mut buf, blocks);
        var(&mut buf, rng.below(4)); // client
        var(
            &mut buf,
            if rng.chance(2) {
                u32::MAX as u64 - rng.below(3)
            } else {
                rng.below(6)
            },
        ); // first clock
        for _ in 0..blocks {
            match rng.below(100) {
                0..=7 => {
                    buf.push(0); // GC
                    var(&mut buf, random_len(rng));
                }
                8..=13 => {
                    buf.push(10); // Skip
                    var(&mut buf, random_len(rng));
                }
                _ => {
                    let content_ref = if rng.chance(3) {
                        9
                    } else {
                        1 + rng.below(8) as u8
                    };
                    let has_origin = rng.chance(50);
                    let has_right_origin = rng.chance(35);
                    let has_parent_sub = rng.chance(30);
                    let mut info = content_ref;
                    if has_origin {
                        info |= 0x80;
                    }
                    if has_right_origin {
                        info |= 0x40;
                    }
                    if has_parent_sub {
                        info |= 0x20;
                    }
                    buf.push(info);
                    if has_origin {
                        random_id(rng, &mut buf);
                    }
                    if has_right_origin {
                        random_id(rng, &mut buf);
                    }
                    if !has_origin && !has_right_origin {
                        if rng.chance(60) {
                            var(&mut buf, 1);
                            string(&mut buf, ["a", "b"][rng.below(2) as usize]);
                        } else {
                            var(&mut buf, 0);
                            random_id(rng, &mut buf);
                        }
                        if has_parent_sub {
                            string(&mut buf, ["k", "l"][rng.below(2) as usize]);
                        }
                    }
                    random_content(rng, &mut buf, content_ref);
                }
            }
        }
    }
    // delete set
    let ds_clients = rng.below(3);
    var(&mut buf, ds_clients);
    for _ in 0..ds_clients {
        var(&mut buf, rng.below(4));
        let ranges = 1 + rng.below(2);
        var(&mut buf, ranges);
        for _ in 0..ranges {
            var(&mut buf, rng.below(9));
            var(&mut buf, random_len(rng));
        }
    }
    buf
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Applies one random sequence; returns the hex of its updates for reporting.
fn run_random_sequence(rng: &mut Rng) -> Vec<String> {
    let n = 2 + rng.below(5) as usize;
    let updates: Vec<Vec<u8>> = (0..n).map(|_| random_update(rng)).collect();
    let hexes: Vec<String> = updates.iter().map(|u| to_hex(u)).collect();
    if std::env::var_os("ZEDI_FUZZ_TRACE").is_some() {
        eprintln!("sequence: {}", hexes.join(","));
    }
    let doc = Doc::new();
    for u in &updates {
        if let Ok(update) = Update::decode_v1(u) {
            let mut txn = doc.transact_mut();
            let _ = txn.apply_update(update);
        }
        check_state_decodes(&doc);
    }
    // the full state must also be applicable to a fresh doc
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let fresh = Doc::new();
    let _ = fresh
        .transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap());
    let _ = doc.to_json(&doc.transact());
    hexes
}

#[test]
fn random_update_sequences() {
    let iters: u64 = std::env::var("ZEDI_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("ZEDI_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut failures = Vec::new();
    for i in 0..iters {
        let mut rng = Rng(seed.wrapping_add(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut hexes = Vec::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            hexes = run_random_sequence(&mut rng);
        }));
        if let Err(panic) = result {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let mut rng = Rng(seed.wrapping_add(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let n = 2 + rng.below(5) as usize;
            let seq: Vec<String> = (0..n).map(|_| to_hex(&random_update(&mut rng))).collect();
            failures.push(format!("iteration {i}: {msg}: {}", seq.join(",")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {iters} sequences panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Deep nesting. One update holds `depth` nested Y.Maps (client 7, clocks 0..depth): map 0 is the
// value of key "k" of root map "root", map i the value of key "k" of map i-1. A second update
// deletes map 0 (deleting a type deletes everything below it).

fn nested_maps_update(depth: u32) -> Vec<u8> {
    const CLIENT: u64 = 7;
    let mut buf = Vec::new();
    var(&mut buf, 1); // one client
    var(&mut buf, depth as u64); // blocks
    var(&mut buf, CLIENT);
    var(&mut buf, 0); // first clock
    for i in 0..depth {
        buf.push(0x20 | 7); // HAS_PARENT_SUB | ContentType, no origins
        if i == 0 {
            var(&mut buf, 1); // parent is a root type ...
            string(&mut buf, "root");
        } else {
            var(&mut buf, 0); // ... or the previous map item
            var(&mut buf, CLIENT);
            var(&mut buf, (i - 1) as u64);
        }
        string(&mut buf, "k");
        var(&mut buf, 1); // TypeRef::Map
    }
    var(&mut buf, 0); // empty delete set
    buf
}

fn delete_first_map_update() -> Vec<u8> {
    let mut buf = Vec::new();
    var(&mut buf, 0); // no blocks
    var(&mut buf, 1); // delete set: one client
    var(&mut buf, 7);
    var(&mut buf, 1); // one range
    var(&mut buf, 0); // clock 0
    var(&mut buf, 1); // len 1
    buf
}

/// apply, encode (v1+v2), delete (with the GC at commit), encode again, and re-load the
/// state in a fresh doc.
fn nested_maps_apply_delete_encode(depth: u32) {
    let doc = Doc::new();
    let root = doc.get_or_insert_map("root");
    let update = Update::decode_v1(&nested_maps_update(depth)).unwrap();
    {
        // as the daemon does: apply, then encode what this transaction changed
        let mut txn = doc.transact_mut();
        txn.apply_update(update).unwrap();
        Update::decode_v1(&txn.encode_update_v1()).unwrap();
    }
    if std::env::var_os("ZEDI_PROBE_TO_JSON").is_some() {
        let _ = doc.to_json(&doc.transact());
    }
    {
        let txn = doc.transact();
        assert!(!txn.has_missing_updates());
        assert_eq!(txn.state_vector().get(&yrs::block::ClientID::new(7)), depth);
    }
    check_state_decodes(&doc);
    let update = Update::decode_v1(&delete_first_map_update()).unwrap();
    {
        let mut txn = doc.transact_mut();
        txn.apply_update(update).unwrap();
        Update::decode_v1(&txn.encode_update_v1()).unwrap();
    } // commit: garbage-collects the deleted maps
    assert_eq!(root.len(&doc.transact()), 0);
    check_state_decodes(&doc);
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let fresh = Doc::new();
    fresh
        .transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
}

fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn nested_maps_512_deep_delete_on_2mib_stack() {
    on_small_stack(|| nested_maps_apply_delete_encode(512));
}

/// Before delete and GC were made iterative, ~1,500 levels overflowed a 2 MiB stack (debug).
#[test]
fn nested_maps_10000_deep_delete_on_2mib_stack() {
    on_small_stack(|| nested_maps_apply_delete_encode(10_000));
}

/// For measuring: ZEDI_DEPTH=n cargo test --test zedi_regressions nested_maps_depth_probe
/// -- --ignored (a stack overflow aborts the process).
#[test]
#[ignore]
fn nested_maps_depth_probe() {
    let depth: u32 = std::env::var("ZEDI_DEPTH").unwrap().parse().unwrap();
    on_small_stack(move || nested_maps_apply_delete_encode(depth));
}
