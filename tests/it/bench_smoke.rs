//! The benchmark tooling itself: `zedi-bench` runs each scenario briefly against the real daemon
//! and reports sane figures, `ops/bench/report.py` turns its JSON lines into the tables, and
//! `zedi-bench relay` (compare.sh's baseline) carries the generator's scenarios in full.
//! Figures are not judged here (benchmarks measure, tests do not time), only that the tools work.

use crate::common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Daemon;

/// The load generator, a crate of its own (`crates/zedi-bench`): `ZEDI_BENCH_BIN` or beside
/// the daemon.
fn bench_bin() -> PathBuf {
    common::workspace_bin("zedi-bench", "ZEDI_BENCH_BIN")
}

fn run_bench(daemon: &Daemon, out: &Path, args: &[&str]) {
    run_bench_against(daemon.port, daemon.pid(), out, args);
}

fn run_bench_against(port: u16, server_pid: u32, out: &Path, args: &[&str]) {
    let url = format!("ws://127.0.0.1:{port}");
    let pid = server_pid.to_string();
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
    for heading in [
        "throughput (",
        "fanout (",
        "ramp (",
        "per server",
        "server CPU µs per delivery",
    ] {
        assert!(text.contains(heading), "report lacks {heading:?}:\n{text}");
    }
    assert!(text.contains("embedded"), "{text}");
}

/// `zedi-bench relay` on a free loopback port; killed when dropped.
struct Relay {
    child: Child,
    port: u16,
}

impl Relay {
    fn start() -> Relay {
        let port = common::free_port();
        let child = Command::new(bench_bin())
            .args(["relay", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn zedi-bench relay");
        let relay = Relay { child, port };
        // The relay has no /health: it is up once its port accepts.
        common::wait_until(
            "zedi-bench relay to listen",
            Duration::from_secs(20),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        relay
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn zedi_bench_relay_acknowledges_and_delivers_every_update() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start();
    let pid = relay.child.id();
    let out = dir.path().join("relay.jsonl");
    run_bench_against(
        relay.port,
        pid,
        &out,
        &[
            "--store",
            "relay",
            "--writers",
            "2",
            "--shared-doc",
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
    // Rate 4/s over 1 s: no send falls near the window's end, so every update sent is one
    // whose stamp the subscribers count.
    run_bench_against(
        relay.port,
        pid,
        &out,
        &[
            "--store",
            "relay",
            "--scenario",
            "fanout",
            "--documents",
            "3",
            "--subscribers",
            "3",
            "--rate",
            "4",
            "--seconds",
            "1",
            "--warmup",
            "0",
        ],
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .filter(|l: &serde_json::Value| l.get("scenario").is_some())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let t = &lines[0];
    // errors counts every update never acknowledged; the other writer's updates and the
    // relay's handshake replies are all the writers expect.
    assert_eq!(t["errors"], 0, "{t}");
    assert_eq!(t["unexpected_frames"], 0, "{t}");
    assert_eq!(t["connected"], 2, "{t}");
    assert!(t["acked"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(t["readers_connected"], 2, "{t}");
    assert!(t["reader_deliveries"].as_u64().unwrap() > 0, "{t}");
    assert!(t["server_cpu_s"].as_f64().is_some(), "{t}");
    let f = &lines[1];
    assert_eq!(f["errors"], 0, "{f}");
    assert_eq!(f["subscribers_connected"], 9, "{f}");
    let sent = f["updates_sent"].as_u64().unwrap();
    assert!(sent > 0, "{f}");
    assert_eq!(f["updates_acked"], sent, "{f}");
    assert_eq!(
        f["deliveries"],
        sent * 3,
        "every update to each of its 3 subscribers: {f}"
    );
}
