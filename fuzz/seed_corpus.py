#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets from the captured Hocuspocus frames.

Every frame of tests/fixtures/hocuspocus-v4-frames.json (both directions) goes, as its exact
bytes, into fuzz/corpus/frame_decode/ and fuzz/corpus/awareness_apply/. awareness_apply also
gets, per scenario and address, the sequence of awareness payloads the client sent, each as a
lib0 varBytes (the multi-update input form of that target). Files are named by the SHA-1 of
their content, as libFuzzer does, so re-running is idempotent. Python 3 standard library only.

Usage: python3 fuzz/seed_corpus.py   (from anywhere)
"""

import hashlib
import json
import pathlib

FUZZ_DIR = pathlib.Path(__file__).resolve().parent
FIXTURE = FUZZ_DIR.parent / "tests" / "fixtures" / "hocuspocus-v4-frames.json"
TARGETS = ("frame_decode", "awareness_apply", "message_handler")


def read_var_uint(buf, pos):
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def var_uint(value):
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def awareness_payload(frame):
    """The varBytes payload of an Awareness (type 1) frame, else None."""
    if len(frame) <= 1:
        return None
    n, pos = read_var_uint(frame, 0)
    pos += n
    ty, pos = read_var_uint(frame, pos)
    if ty != 1:
        return None
    length, pos = read_var_uint(frame, pos)
    return frame[pos : pos + length]


def write(target, data):
    directory = FUZZ_DIR / "corpus" / target
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / hashlib.sha1(data).hexdigest()
    if not path.exists():
        path.write_bytes(data)
        return 1
    return 0


def main():
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    written = {t: 0 for t in TARGETS}
    for scenario in fixture["scenarios"].values():
        sequences = {}
        for frame in scenario:
            data = bytes.fromhex(frame["hex"])
            for target in ("frame_decode", "awareness_apply"):
                written[target] += write(target, data)
            payload = awareness_payload(data)
            if payload is not None and frame["dir"] == "client->server":
                key = frame["decoded"]["address"]
                sequences.setdefault(key, []).append(payload)
        # message_handler takes a whole conversation: client frames, each with a u16 LE length.
        client = [bytes.fromhex(f["hex"]) for f in scenario if f["dir"] == "client->server"]
        conversation = b"".join(len(f).to_bytes(2, "little") + f for f in client if len(f) < 65536)
        written["message_handler"] += write("message_handler", conversation)
        for payloads in sequences.values():
            blob = b"".join(var_uint(len(p)) + p for p in payloads)
            written["awareness_apply"] += write("awareness_apply", blob)
    for target in TARGETS:
        total = len(list((FUZZ_DIR / "corpus" / target).iterdir()))
        print(f"corpus/{target}: {written[target]} new, {total} files")


if __name__ == "__main__":
    main()
