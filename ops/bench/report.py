#!/usr/bin/env python3
"""Table and ratios (zedi-sync / Hocuspocus) from a compare.sh JSON-lines file."""
import json, sys

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
by = {}
for r in rows:
    by[(r.get("scenario"), r.get("store"))] = r

def f(x, nd=2):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))

print("\nthroughput (1 writer, readers on the same document)")
print(f"{'server':<11}{'readers':>8}{'in-fl':>6}{'acked/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'err':>5}{'bench%':>8}{'server%':>8}")
for (s, t), r in by.items():
    if s == "throughput":
        print(f"{t:<11}{r['readers']:>8}{r['in_flight']:>6}{r['acked_per_sec']:>10.1f}{r['p50_ms']:>9.2f}"
              f"{r['p99_ms']:>9.2f}{r['max_ms']:>9.2f}{r['errors']:>5}{r['client_cpu_pct']:>8.1f}{f(r['server_cpu_pct'],1):>8}")
print("\nfanout (docs x subscribers x updates/s per doc)")
print(f"{'server':<11}{'shape':>12}{'deliv/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'ack p99':>9}{'err':>5}{'bench%':>8}{'server%':>8}")
for (s, t), r in by.items():
    if s in ("fanout", "cross-node"):
        shape = f"{r['documents']}x{r['subscribers_per_doc']}x{r['rate_per_doc']:g}"
        print(f"{t:<11}{shape:>12}{r['deliveries_per_sec']:>9.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
              f"{r['max_ms']:>9.2f}{r['ack_p99_ms']:>9.2f}{r['errors']:>5}{f(r['client_cpu_pct'],1):>8}{f(r['server_cpu_pct'],1):>8}")
print("\nramp (synced idle connections)")
print(f"{'server':<11}{'synced':>13}{'all ms':>9}{'hs p50':>8}{'hs p99':>8}{'RSS before':>11}{'RSS after':>10}{'KiB/conn':>9}{'bench%':>8}{'server%':>8}")
for (s, t), r in by.items():
    if s == "ramp":
        mib = lambda kb: "-" if kb is None else f"{kb/1024:.1f}M"
        print(f"{t:<11}{str(r['synced'])+'/'+str(r['connections']):>13}{r['all_synced_ms']:>9.0f}{r['handshake_p50_ms']:>8.1f}"
              f"{r['handshake_p99_ms']:>8.1f}{mib(r['server_rss_before_kb']):>11}{mib(r['server_rss_after_kb']):>10}"
              f"{f(r['rss_per_connection_kb'],1):>9}{f(r['client_cpu_pct'],1):>8}{f(r['server_cpu_pct'],1):>8}")

def ratio(scn, key, store):
    a, b = by.get((scn, store)), by.get((scn, "hocuspocus"))
    if not a or not b or not b.get(key) or a.get(key) is None:
        return None
    return a[key] / b[key]

print("\nratios zedi-sync / hocuspocus (bar in brackets)")
for store in ("embedded", "postgres"):
    parts = []
    for scn, key, bar in (("throughput", "acked_per_sec", ">= 5"), ("fanout", "p99_ms", "<= 0.5"),
                          ("ramp", "rss_per_connection_kb", "<= 0.2")):
        r = ratio(scn, key, store)
        parts.append(f"{scn} {key} {'-' if r is None else f'{r:.2f}'} [{bar}]")
    print(f"  {store:<9} " + "; ".join(parts))
