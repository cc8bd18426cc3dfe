#!/usr/bin/env python3
"""Table and ratios (zedi-sync / Hocuspocus, every server / the bare relay) from a compare.sh
JSON-lines file.

Sweeps are summarised the way the performance bar reads them: throughput compares each server's
best acknowledged rate over the in-flight values tried; fan-out compares p99 at 5 updates/s per
document, and the highest rate tried at which p99 stayed under 10 ms with every update delivered.

"Server CPU per delivery" is the server's CPU time over the measured window (from its
/proc/PID/stat, as server% is) divided by the messages it delivered to clients in that window:
throughput, acknowledged updates x connected readers (each acknowledged update reaches every
reader; without readers, the acknowledgements themselves); fan-out, the deliveries the
subscribers counted. Ramp has no deliveries: its figure is CPU per synced connection over the
setup. The ratio is to the bare relay (`zedi-bench relay`, target `relay`) in the same shape.
"""
import json, sys

P99_LIMIT_MS = 10.0
BASE_RATE = 5.0

rows, machine = [], None
for line in open(sys.argv[1]):
    d = json.loads(line)
    if "machine" in d:
        machine = machine or d["machine"]
    else:
        rows.append(d)
if machine:
    print(f"{machine['cpu_model']} x{machine['cores']} cores, {machine['mem_total_mib']} MiB, "
          f"Linux {machine['kernel']}, {machine['rustc']}")
stores = []
for r in rows:
    if r.get("store") not in stores:
        stores.append(r.get("store"))


def f(x, nd=2):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def of(scenario, store=None):
    return [r for r in rows if r.get("scenario") == scenario and (store is None or r.get("store") == store)]


RELAY = "relay"


def delivered(r):
    """Messages the server delivered to clients in the window (see the docstring)."""
    if r.get("scenario") == "throughput":
        readers = r.get("readers_connected") or 0
        return r["acked"] * readers if readers else r["acked"]
    if r.get("scenario") in ("fanout", "cross-node"):
        return r["deliveries"]
    return None


def server_cpu_us_per(r):
    """Server CPU µs per delivery (ramp: per synced connection), None when not measured."""
    units = r["synced"] if r.get("scenario") == "ramp" else delivered(r)
    cpu_s = r.get("server_cpu_s")
    if cpu_s is None and r.get("server_cpu_pct") is not None:
        # Lines written before server_cpu_s existed: server% over the window (ramp: the setup).
        secs = r["all_synced_ms"] / 1000.0 if r.get("scenario") == "ramp" else r["seconds"]
        cpu_s = r["server_cpu_pct"] / 100.0 * secs
    return cpu_s * 1e6 / units if units and cpu_s is not None else None


print("\nthroughput (1 writer, readers on the same document)")
print(f"{'server':<11}{'readers':>8}{'in-fl':>6}{'acked/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'srv µs/d':>9}{'err':>5}{'bench%':>8}{'server%':>8}")
for r in of("throughput"):
    print(f"{r['store']:<11}{r['readers']:>8}{r['in_flight']:>6}{r['acked_per_sec']:>10.1f}{r['p50_ms']:>9.2f}"
          f"{r['p99_ms']:>9.2f}{r['max_ms']:>9.2f}{f(server_cpu_us_per(r)):>9}{r['errors']:>5}{r['client_cpu_pct']:>8.1f}"
          f"{f(r['server_cpu_pct'],1):>8}")
print("\nfanout (docs x subscribers x updates/s per doc)")
print(f"{'server':<11}{'shape':>12}{'deliv/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'ack p99':>9}{'srv µs/d':>9}{'err':>5}{'bench%':>8}{'server%':>8}")
for r in of("fanout") + of("cross-node"):
    shape = f"{r['documents']}x{r['subscribers_per_doc']}x{r['rate_per_doc']:g}"
    print(f"{r['store']:<11}{shape:>12}{r['deliveries_per_sec']:>9.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
          f"{r['max_ms']:>9.2f}{r['ack_p99_ms']:>9.2f}{f(server_cpu_us_per(r)):>9}{r['errors']:>5}{f(r['client_cpu_pct'],1):>8}"
          f"{f(r['server_cpu_pct'],1):>8}")
print("\nramp (synced idle connections)")
print(f"{'server':<11}{'synced':>13}{'all ms':>9}{'hs p50':>8}{'hs p99':>8}{'RSS before':>11}{'RSS after':>10}{'KiB/conn':>9}{'srv µs/c':>9}{'bench%':>8}{'server%':>8}")
for r in of("ramp"):
    mib = lambda kb: "-" if kb is None else f"{kb/1024:.1f}M"
    print(f"{r['store']:<11}{str(r['synced'])+'/'+str(r['connections']):>13}{f(r['all_synced_ms'],0):>9}{r['handshake_p50_ms']:>8.1f}"
          f"{r['handshake_p99_ms']:>8.1f}{mib(r['server_rss_before_kb']):>11}{mib(r['server_rss_after_kb']):>10}"
          f"{f(r['rss_per_connection_kb'],1):>9}{f(server_cpu_us_per(r),1):>9}{f(r['client_cpu_pct'],1):>8}{f(r['server_cpu_pct'],1):>8}")

mib = lambda kb: "-" if kb is None else f"{kb/1024:.1f}M"

if of("docmem"):
    print("\ndocmem (documents typed, typists gone, one idle synced subscriber each; per document:"
          " (RSS - baseline) / documents, KiB and x the encoded size)")
    print(f"{'server':<11}{'docs':>10}{'enc KiB':>8}{'baseline':>9}{'idle KiB':>9}{'x enc':>7}"
          f"{'loaded KiB':>11}{'x enc':>7}{'after KiB':>10}{'idle s':>7}{'at rest':>8}{'unload s':>9}")
    for r in of("docmem"):
        docs = f"{r['documents_filled']}/{r['documents']}"
        print(f"{r['store']:<11}{docs:>10}{r['doc_encoded_bytes_avg']/1024:>8.1f}{mib(r['rss_baseline_kb']):>9}"
              f"{f(r['rss_per_idle_doc_kb'],1):>9}{f(r['idle_doc_over_encoded']):>7}"
              f"{f(r['rss_per_loaded_doc_kb'],1):>11}{f(r['loaded_doc_over_encoded']):>7}"
              f"{f(r['rss_per_doc_after_close_kb'],1):>10}{f(r['idle_s'],0):>7}"
              f"{f(r.get('documents_at_rest'),0):>8}{f(r.get('unload_s'),1):>9}")

if of("joinstorm"):
    print("\njoinstorm (J clients join one large document at once)")
    print(f"{'server':<11}{'synced':>10}{'enc KiB':>8}{'all ms':>9}{'hs p50':>8}{'hs p99':>8}{'RSS before':>11}"
          f"{'RSS peak':>9}{'srv CPU s':>10}{'KiB/joiner':>11}{'verified':>9}{'at rest':>8}")
    for r in of("joinstorm"):
        per = r.get("bytes_received_per_joiner")
        print(f"{r['store']:<11}{str(r['synced'])+'/'+str(r['connections']):>10}{r['doc_encoded_bytes']/1024:>8.1f}"
              f"{f(r['all_synced_ms'],0):>9}{r['handshake_p50_ms']:>8.1f}{r['handshake_p99_ms']:>8.1f}"
              f"{mib(r['server_rss_before_kb']):>11}{mib(r['server_rss_peak_kb']):>9}{f(r['server_cpu_s']):>10}"
              f"{f(None if per is None else per/1024,1):>11}{str(r['step2_verified'])+'/'+str(r['step2_sampled']):>9}"
              f"{f(r.get('documents_at_rest_before'),0):>8}")
    print("  (the relay is not measured: it keeps no document)")


def best_throughput(store):
    vals = [r["acked_per_sec"] for r in of("throughput", store) if r.get("errors") == 0]
    return max(vals) if vals else None


def fan_at(store, rate):
    for r in of("fanout", store):
        if r["rate_per_doc"] == rate:
            return r
    return None


def highest_fast_rate(store):
    """Highest rate tried whose p99 < 10 ms with nothing lost (deliveries >= 99 % of expected)."""
    best = None
    for r in of("fanout", store):
        expected = r["documents"] * r["subscribers_per_doc"] * r["rate_per_doc"]
        ok = r["errors"] == 0 and r["p99_ms"] < P99_LIMIT_MS and r["deliveries_per_sec"] >= 0.99 * expected
        if ok and (best is None or r["rate_per_doc"] > best):
            best = r["rate_per_doc"]
    return best


def ramp_kib(store):
    rs = of("ramp", store)
    return rs[0].get("rss_per_connection_kb") if rs else None


def ratio(a, b):
    return None if a is None or not b else a / b


print("\nper server")
print(f"{'server':<11}{'best acked/s':>13}{'fan p99@5 ms':>14}{'fastest rate <10ms':>20}{'KiB/conn':>10}")
for s in stores:
    fa = fan_at(s, BASE_RATE)
    print(f"{s:<11}{f(best_throughput(s),1):>13}{f(fa['p99_ms'] if fa else None):>14}"
          f"{f(highest_fast_rate(s),1):>20}{f(ramp_kib(s),2):>10}")

print("\nratios zedi-sync / hocuspocus [bar]")
h = "hocuspocus"
for s in stores:
    if s in (h, RELAY):
        continue
    fa, fh = fan_at(s, BASE_RATE), fan_at(h, BASE_RATE)
    fast_s, fast_h = highest_fast_rate(s), highest_fast_rate(h)
    if fast_h is None:
        fast = "hocuspocus never under 10 ms" + (f"; zedi up to {fast_s:g}/s" if fast_s else "")
    else:
        fast = f(ratio(fast_s, fast_h))
    parts = [
        f"throughput {f(ratio(best_throughput(s), best_throughput(h)))} [>= 5]",
        f"fan-out p99 {f(ratio(fa and fa['p99_ms'], fh and fh['p99_ms']))} [<= 0.5]",
        f"fan-out fastest rate {fast} [>= 5]",
        f"memory/conn {f(ratio(ramp_kib(s), ramp_kib(h)))} [<= 0.2]",
    ]
    print(f"  {s:<9} " + "; ".join(parts))


def shape_key(r):
    """The measurement's shape, the same for every server that ran it."""
    sc = r.get("scenario")
    if sc == "throughput":
        return f"throughput {r['readers']} readers, in-flight {r['in_flight']}"
    if sc in ("fanout", "cross-node"):
        return f"{sc} {r['documents']}x{r['subscribers_per_doc']}x{r['rate_per_doc']:g}"
    if sc == "ramp":
        return f"ramp {r['connections']} conns / {r['documents']} docs"
    return None


shapes, cpu = [], {}
for r in rows:
    k = shape_key(r)
    if k is None:
        continue
    if k not in shapes:
        shapes.append(k)
    cpu.setdefault((k, r.get("store")), server_cpu_us_per(r))
order = ([RELAY] if RELAY in stores else []) + [s for s in stores if s != RELAY]
print("\nserver CPU µs per delivery (ramp: per synced connection), (x the relay)")
print(f"{'shape':<40}" + "".join(f"{s:>18}" for s in order))
for k in shapes:
    base = cpu.get((k, RELAY))
    cells = []
    for s in order:
        v = cpu.get((k, s))
        cell = f(v)
        if v is not None and s != RELAY and base:
            cell += f" ({v / base:.2f}x)"
        cells.append(cell)
    print(f"{k:<40}" + "".join(f"{c:>18}" for c in cells))
