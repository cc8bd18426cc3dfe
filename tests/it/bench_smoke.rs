//! The benchmark tooling itself: `zedi-bench` runs each scenario briefly against the real daemon
//! and reports sane figures, and `ops/bench/report.py` turns its JSON lines into the tables.
//! Figures are not judged here (benchmarks measure, tests do not time), only that the tools work.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use common::Daemon;

/// The load generator, a crate of its own (`crates/zedi-bench`): `ZEDI_BENCH_BIN` or beside
/// the daemon.
fn bench_bin() -> PathBuf {
    common::workspace_bin("zedi-bench", "ZEDI_BENCH_BIN")
}

fn run_bench(daemon: &Daemon, out: &std::path::Path, args: &[&str]) {
    let url = format!("ws://127.0.0.1:{}", daemon.port);
    let pid = daemon.pid().to_string();
    let status = Command::new(bench_bin())
        .args(["--url", &url, "--server-pid", &pid, "--out"])
        .arg(out)
        .args(args)
        .output()
        .expect("run zedi-bench");
    assert!(
        status.status.success(),
        "zedi-bench {args:?} failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

// One scenario read top to bottom: run every bench scenario, then check what report.py reads.
#[test]
fn zedi_bench_runs_every_scenario_and_report_py_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    // The limits this test is not about are lifted, as scripts/bench.sh does: a closed-loop
    // writer on a fast machine sends far more than the default 300 msg/s per socket and would be
    // closed for it, so the outcome would depend on the machine's speed. Loopback is one client
    // address, so the per-address cap is lifted too.
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("ZEDI__LIMITS__MAX_MESSAGES_PER_SEC", "1000000"),
            ("ZEDI__LIMITS__MAX_MESSAGE_BURST", "1000000"),
            ("ZEDI__LIMITS__MAX_BYTES_PER_SEC", "1000000000"),
            ("ZEDI__LIMITS__MAX_CONNECTIONS_PER_IP", "0"),
        ],
    );
    let out = dir.path().join("results.jsonl");
    run_bench(
        &daemon,
        &out,
        &[
            "--writers",
            "1",
            "--readers",
            "2",
            "--in-flight",
            "4",
            "--seconds",
            "1",
            "--warmup",
            "0",
        ],
    );
    run_bench(
        &daemon,
        &out,
        &[
            "--scenario",
            "fanout",
            "--documents",
            "2",
            "--subscribers",
            "2",
            "--rate",
            "5",
            "--seconds",
            "1",
            "--warmup",
            "0",
        ],
    );
    run_bench(
        &daemon,
        &out,
        &[
            "--scenario",
            "ramp",
            "--connections",
            "20",
            "--documents",
            "2",
            "--hold",
            "0",
        ],
    );
    run_bench(
        &daemon,
        &out,
        &[
            "--scenario",
            "churn",
            "--documents",
            "3",
            "--doc-kib",
            "8",
            "--settle",
            "1",
        ],
    );

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let scenario = |name: &str| {
        lines
            .iter()
            .find(|l| l["scenario"] == name)
            .unwrap_or_else(|| panic!("no {name} line in {lines:?}"))
            .clone()
    };
    assert!(
        lines.iter().any(|l| l.get("machine").is_some()),
        "machine line"
    );
    let t = scenario("throughput");
    assert_eq!(t["errors"], 0, "{t}");
    assert!(t["acked"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(t["readers_connected"], 2, "{t}");
    assert!(t["reader_deliveries"].as_u64().unwrap() > 0, "{t}");
    let f = scenario("fanout");
    assert_eq!(f["errors"], 0, "{f}");
    assert!(f["deliveries"].as_u64().unwrap() > 0, "{f}");
    assert!(f["p99_ms"].as_f64().is_some(), "{f}");
    let r = scenario("ramp");
    assert_eq!(r["synced"], 20, "{r}");
    assert!(r["server_rss_after_kb"].as_u64().unwrap() > 0, "{r}");
    let c = scenario("churn");
    assert_eq!(c["documents_filled"], 3, "{c}");
    assert!(
        c["doc_encoded_bytes_avg"].as_u64().unwrap() >= 8 * 1024,
        "{c}"
    );
    assert!(c["unload_s"].as_f64().is_some(), "{c}");
    assert_eq!(c["rss_series_kb"].as_array().map(Vec::len), Some(2), "{c}");
    assert!(c["rss_baseline_kb"].as_u64().unwrap() > 0, "{c}");

    let report = Command::new("python3")
        .arg(common::repo_path("ops/bench/report.py"))
        .arg(&out)
        .output()
        .expect("run report.py");
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let text = String::from_utf8_lossy(&report.stdout);
    for heading in ["throughput (", "fanout (", "ramp (", "per server"] {
        assert!(text.contains(heading), "report lacks {heading:?}:\n{text}");
    }
    assert!(text.contains("embedded"), "{text}");
}
