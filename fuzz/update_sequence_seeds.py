#!/usr/bin/env python3
"""Writes the committed seeds of the update_sequence fuzz target (fuzz/seeds/update_sequence/).

Each seed is a sequence of Yjs v1 updates, written in the target's input layout as raw-update
steps (op byte 0xF0, a length, the bytes), so the update bytes reach yrs exactly as listed here:
- honest editing sequences, encoded as a Yjs client would (text typed by two clients, delivered
  in order, out of order and twice; map keys set and overwritten; a nested text; a tiptap-like
  XML paragraph with formatting), and every client update the captured Hocuspocus conversations
  in tests/fixtures/hocuspocus-v4-frames.json carry;
- the known findings, so that a regression is caught on the first run (see fuzz/README.md).

Files are named after what they hold. Python 3 standard library only; re-running rewrites them.

Usage: python3 fuzz/update_sequence_seeds.py   (from anywhere)
"""

import json
import pathlib

FUZZ_DIR = pathlib.Path(__file__).resolve().parent
OUT = FUZZ_DIR / "seeds" / "update_sequence"
FIXTURE = FUZZ_DIR.parent / "tests" / "fixtures" / "hocuspocus-v4-frames.json"


def vu(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def vs(s):
    b = s.encode() if isinstance(s, str) else s
    return vu(len(b)) + b


def update(sections, deletes=()):
    """sections: [(client, clock, [struct bytes])]; deletes: [(client, [(clock, len)])]."""
    out = vu(len(sections))
    for client, clock, structs in sections:
        out += vu(len(structs)) + vu(client) + vu(clock) + b"".join(structs)
    out += vu(len(deletes))
    for client, ranges in deletes:
        out += vu(client) + vu(len(ranges))
        for clock, length in ranges:
            out += vu(clock) + vu(length)
    return out


def ident(client, clock):
    return vu(client) + vu(clock)


def string_in_root(root, text):
    return bytes([0x04]) + vu(1) + vs(root) + vs(text)


def string_after(origin, text):
    return bytes([0x84]) + ident(*origin) + vs(text)


def string_before(right_origin, text):
    return bytes([0x44]) + ident(*right_origin) + vs(text)


def seed(updates):
    """The target's input: steps - 2, one pool client (id 0), then one raw step per update."""
    assert 2 <= len(updates) <= 8
    out = bytearray([len(updates) - 2, 0, 0])
    for u in updates:
        out.append(0xF0)
        if len(u) < 255:
            out.append(len(u))
        else:
            out += bytes([255]) + len(u).to_bytes(2, "little")
        out += u
    return bytes(out)


# Honest edits.
T1 = update([(1, 0, [string_in_root("default", "hello")])])
T2 = update([(1, 5, [string_after((1, 4), " world")])])
T3 = update([(2, 0, [string_after((1, 10), "!")])])
T4 = update([(2, 1, [string_before((1, 0), "Oh, ")])])
T5 = update([], [(1, [(0, 5)])])

M1 = update([(3, 0, [bytes([0x28]) + vu(1) + vs("map") + vs("title") + vu(1) + b"\x77" + vs("a")])])
M2 = update([(3, 1, [bytes([0x88]) + ident(3, 0) + vu(1) + b"\x77" + vs("b")])], [(3, [(0, 1)])])
M3 = update([(3, 2, [bytes([0x27]) + vu(1) + vs("map") + vs("body") + b"\x02"])])
M4 = update([(3, 3, [bytes([0x04]) + vu(0) + ident(3, 2) + vs("x")])])

X1 = update(
    [
        (
            5,
            0,
            [
                bytes([0x07]) + vu(1) + vs("default") + b"\x03" + vs("paragraph"),
                bytes([0x07]) + vu(0) + ident(5, 0) + b"\x06",
                bytes([0x04]) + vu(0) + ident(5, 1) + vs("hi 😀"),
            ],
        )
    ]
)
X2 = update([(5, 7, [bytes([0x86]) + ident(5, 6) + vs("bold") + vs("true")])])

SEEDS = {
    "honest-text-two-clients": [T1, T2, T3, T4, T5],
    "honest-text-out-of-order": [T2, T3, T1, T5, T4],
    "honest-text-duplicates": [T1, T1, T2, T5, T2, T5],
    "honest-map-nested-text": [M1, M2, M3, M4],
    "honest-xml-paragraph": [X1, X2, T1],
    # Known findings on yrs 0.28.1 unchanged (fuzz/README.md says how fast the target finds them).
    # 1. SIGSEGV (ASan: heap-use-after-free) in Update::integrate / missing_dependency: a struct
    # that overlaps a pending one is split by Update::exclude, which frees what integrate uses.
    "known-missing-dependency-uaf": [
        bytes.fromhex("020200000001000103030100020a02000200"),
        bytes.fromhex("01020300840301030000004100000000"),
    ],
    # The same, minimized: GC at clock 1 (pending), then Deleted(3) at clock 0 over it.
    "known-missing-dependency-uaf-min": [
        bytes.fromhex("01010701000100"),
        bytes.fromhex("010107000101000300"),
    ],
    # 2. An item whose right origin is itself stays pending; merging the pending update when
    # encoding re-reads its ContentJSON wrongly and yrs panics (transaction.rs merge_pending_v1):
    # Poisoned. The minimized one: a JSON item with origin and right origin = itself.
    "known-self-origin": [bytes.fromhex("01020000420000000100010000000000"), bytes.fromhex("0000")],
    "known-self-origin-min": [bytes.fromhex("01010000c200000000000000"), bytes.fromhex("0000")],
    # 3. ContentJSON with count 0 and one string: accepted, re-encoded with count 1, which yrs
    # then reads as two strings: a late joiner cannot load the document. Minimized: root "".
    "known-json-count-mismatch": [
        bytes.fromhex("0101a1c439000201086a736f6e726f6f7400017800"),
        bytes.fromhex("0000"),
    ],
    "known-json-count-mismatch-min": [bytes.fromhex("01010000020100000000"), bytes.fromhex("0000")],
    # Further findings of this target on yrs 0.28.1 unchanged (minimized).
    # Use-after-free freed by BlockStore::push (not by exclude): one update that lists the same
    # client twice with overlapping clocks.
    "other-uaf-same-client-twice": [
        bytes.fromhex(
            "03010700c407080708050000000000030700c40700070009e280a8e280a8e280a806010004f09f9491"
            "03227822000100000000"
        ),
        bytes.fromhex(
            "010107080801030000000276020500000000007e050000000000760205000000000077000077050000"
            "000000770000"
        ),
    ],
    # Origins pointing forward into the same client's later clocks, integrated once the gap is
    # filled: the document's own full state leaves a late joiner without those structs.
    "other-forward-origin-late-joiner": [
        bytes.fromhex("01010700c407050705010000"),
        bytes.fromhex("010107030101000300"),
    ],
    # The same client twice in one update (GC 0..4, then GC at 3): the document says clock 4, a
    # late joiner gets nothing.
    "other-same-client-twice-late-joiner": [
        bytes.fromhex("020103000004010303000100"),
        bytes.fromhex("0000"),
    ],
    # Contained yrs panics (Poisoned). The overflow ones are debug-assertion panics (the fuzz
    # build checks overflow); a release build wraps there and goes on with a wrong index.
    # block_store.rs:320 subtract overflow: GC at 1 pending, then GC(3) at 0 over it.
    "other-poisoned-block-store-320": [
        bytes.fromhex("01010301000100"),
        bytes.fromhex("01010300000300"),
    ],
    # block_store.rs:70 subtract overflow: clocks near u32::MAX.
    "other-poisoned-block-store-70": [
        bytes.fromhex("010300007400000074000003000000740000000107010001"),
        bytes.fromhex("010107fcffffff0f000100"),
    ],
    # block_store.rs:317 Option::unwrap on None.
    "other-poisoned-block-store-317": [
        bytes.fromhex("02000000010200010107000000000000000100"),
        bytes.fromhex("010102feffffff0f010107000000000000000100"),
    ],
    # update.rs:155 unreachable!().
    "other-poisoned-update-155": [
        bytes.fromhex("01010000010107000000000000000100"),
        bytes.fromhex("02010000040107000000000000000100010002010000000100"),
    ],
    # update.rs:862 add overflow (clock + length past u32::MAX when the update is read again).
    "other-poisoned-update-862": [
        bytes.fromhex("020200008100008100000101000000feffffff0f00"),
        bytes.fromhex("0000"),
    ],
    # transaction.rs:795 subtract overflow: a delete set of 14 ranges, some of length 0, over a
    # 2-unit string.
    "other-poisoned-transaction-795": [
        bytes.fromhex("010100000401070000000000000004f09f988000"),
        bytes.fromhex("0001000e00000001000000000000000700000000000000000000000000000000"),
    ],
    # Memory leak (LeakSanitizer, run.sh keeps leak detection on): any subdocument (ContentDoc)
    # leaks the whole document when it is dropped (here: a subdoc "g" in root "default").
    "other-subdoc-leak": [bytes.fromhex("0101010009010764656661756c740167760000"), bytes.fromhex("0000")],
}


def fixture_updates():
    """Every client SyncStep2/Update payload of the captured conversations, per document."""
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    per_doc = {}
    for name, scenario in fixture["scenarios"].items():
        for frame in scenario:
            decoded = frame["decoded"]
            if frame["dir"] != "client->server" or decoded.get("type") != 0:
                continue
            if decoded.get("sub") not in (1, 2):
                continue
            data = bytes.fromhex(frame["hex"])
            pos = 0

            def read_uint():
                nonlocal pos
                value, shift = 0, 0
                while True:
                    b = data[pos]
                    pos += 1
                    value |= (b & 0x7F) << shift
                    if b < 0x80:
                        return value
                    shift += 7

            skip = read_uint()  # address
            pos += skip
            read_uint()  # type
            read_uint()  # sync sub-type
            length = read_uint()
            per_doc.setdefault(decoded["address"], []).append(data[pos : pos + length])
    return per_doc


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    seeds = dict(SEEDS)
    captured = [u for updates in fixture_updates().values() for u in updates]
    if len(captured) >= 2:
        seeds["honest-captured-hocuspocus"] = captured[:8]
    for name, updates in seeds.items():
        (OUT / name).write_bytes(seed(updates))
    print(f"seeds/update_sequence: {len(seeds)} files")


if __name__ == "__main__":
    main()
