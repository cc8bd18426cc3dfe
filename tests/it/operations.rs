//! Operations: graceful drain, CloudWatch `ActiveConnections` and `MemoryPressure` (against
//! moto's real AWS API emulator, and as EMF lines), and the metrics catalogue.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, bin, free_port, http_get, render, text_update, wait_until};
use zedi_sync::protocol::{Message, SyncMessage};

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
}

/// Spawns the daemon with stdout piped (EMF lines go there); returns the child and its port.
fn spawn_piped(data: &std::path::Path, env: &[(&str, &str)]) -> (std::process::Child, u16) {
    let port = free_port();
    let mut cmd = Command::new(bin());
    cmd.env("PORT", port.to_string())
        .env("ZEDI__SERVER__HOST", "127.0.0.1")
        .env("ZEDI__STORE__PATH", data.join("zedi-sync.db"))
        .env("ZEDI__LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    wait_until("the daemon to start", Duration::from_secs(20), || {
        http_get(port, "/health").map(|(s, _)| s) == Some(200)
    });
    (child, port)
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn sigterm_drains_health_503_refuses_upgrades_closes_with_4205_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn_piped(dir.path(), &[("ZEDI__SERVER__DRAIN_DELAY_MS", "1500")]);
    let mut c = common::Client::connect(port);
    c.open("drained");
    c.send(
        "drained",
        Message::Sync(SyncMessage::Update(&text_update(1, "kept"))),
    );
    c.expect_ack("drained");
    let signalled = Instant::now();
    signal(child.id(), "-TERM");
    // /health turns 503 at once.
    let mut saw_503 = false;
    while signalled.elapsed() < Duration::from_millis(1000) {
        if let Some((503, body)) = http_get(port, "/health") {
            assert!(body.contains("draining"), "{body}");
            saw_503 = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(saw_503, "/health did not turn 503 at once");
    // New upgrades are refused while draining.
    assert!(
        tungstenite::connect(format!("ws://127.0.0.1:{port}/")).is_err(),
        "upgrade accepted while draining"
    );
    // The existing connection is closed with a code the provider reconnects after.
    c.expect_close(4205);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)),
        Some(0),
        "clean exit"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        signalled.elapsed()
    );

    let daemon = Daemon::start(dir.path(), &[]);
    let mut c = daemon.ws();
    assert_eq!(render(&[&c.open("drained")]), "kept");
}

#[test]
fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _port) = spawn_piped(
        dir.path(),
        &[
            ("ZEDI__SERVER__DRAIN_DELAY_MS", "15000"),
            ("ZEDI__SERVER__DRAIN_DEADLINE_MS", "20000"),
        ],
    );
    signal(child.id(), "-TERM");
    // What is checked is that nothing happens: the daemon is still there a moment later.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still draining after the first signal"
    );
    let second = Instant::now();
    signal(child.id(), "-INT");
    assert!(
        wait_exit(&mut child, Duration::from_secs(3)).is_some(),
        "did not exit on the second signal"
    );
    assert!(second.elapsed() < Duration::from_secs(2));
}

/// Starts the daemon in EMF mode (1 s interval) with `env` added; returns it, its port and its
/// stdout lines.
fn emf_daemon(
    data: &std::path::Path,
    env: &[(&str, &str)],
) -> (std::process::Child, u16, std::sync::mpsc::Receiver<String>) {
    let mut all = vec![
        ("ZEDI__CLOUDWATCH__MODE", "emf"),
        ("ZEDI__CLOUDWATCH__INTERVAL_SECS", "1"),
        ("ZEDI__CLOUDWATCH__NAMESPACE", "zedi/test"),
    ];
    all.extend_from_slice(env);
    let (mut child, port) = spawn_piped(data, &all);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, port, rx)
}

/// The first EMF line (within 10 s) whose `ActiveConnections` is `connections`; every line on
/// the way must be an EMF document of namespace zedi/test with the ServiceName dimension.
fn emf_line_with(
    rx: &std::sync::mpsc::Receiver<String>,
    connections: u64,
) -> Option<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).expect("every stdout line is an EMF JSON document");
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "zedi/test");
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["ServiceName"]])
        );
        assert_eq!(directive["Metrics"][0]["Name"], "ActiveConnections");
        assert_eq!(directive["Metrics"][0]["Unit"], "Count");
        assert!(v["_aws"]["Timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        assert_eq!(v["ServiceName"], "zedi-realtime");
        if v["ActiveConnections"] == connections {
            return Some(v);
        }
    }
    None
}

#[test]
fn emf_mode_prints_active_connections_and_memory_pressure_as_embedded_metric_format() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port, rx) = emf_daemon(dir.path(), &[]);
    let clients: Vec<_> = (0..3).map(|_| common::Client::connect(port)).collect();
    let seen = emf_line_with(&rx, 3);
    drop(clients);
    let _ = child.kill();
    let _ = child.wait();
    let v = seen.expect("no EMF line with ActiveConnections = 3");
    // The same line, under the same directive and dimensions, carries the budget's use.
    assert_eq!(
        v["_aws"]["CloudWatchMetrics"][0]["Metrics"][1],
        serde_json::json!({"Name": "MemoryPressure", "Unit": "Percent"}),
        "{v}"
    );
    let percent = v["MemoryPressure"]
        .as_f64()
        .expect("MemoryPressure is a number");
    assert!((0.0..=100.0).contains(&percent), "{percent}");
}

#[test]
fn emf_mode_without_memory_metric_name_prints_only_active_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port, rx) =
        emf_daemon(dir.path(), &[("ZEDI__CLOUDWATCH__MEMORY_METRIC_NAME", "")]);
    let clients: Vec<_> = (0..2).map(|_| common::Client::connect(port)).collect();
    let seen = emf_line_with(&rx, 2);
    drop(clients);
    let _ = child.kill();
    let _ = child.wait();
    let v = seen.expect("no EMF line with ActiveConnections = 2");
    assert_eq!(
        v["_aws"]["CloudWatchMetrics"][0]["Metrics"],
        serde_json::json!([{"Name": "ActiveConnections", "Unit": "Count"}])
    );
    assert!(v.get("MemoryPressure").is_none(), "{v}");
}

/// moto's server, the AWS API emulator (`scripts/test.sh` installs it and sets ZEDI_TEST_MOTO_SERVER).
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let bin = std::env::var("ZEDI_TEST_MOTO_SERVER").expect(
            "set ZEDI_TEST_MOTO_SERVER to moto_server (scripts/test.sh installs moto[server] and sets it)",
        );
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        wait_until("moto_server to start", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Moto { child, port }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Maximum of every datapoint of `metric` with ServiceName = `service` in the last 10 minutes.
async fn datapoints(endpoint: &str, metric: &str, service: &str) -> Vec<f64> {
    use aws_sdk_cloudwatch::types::{Dimension, Statistic};
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    let client = aws_sdk_cloudwatch::Client::new(&config);
    let now = std::time::SystemTime::now();
    let out = client
        .get_metric_statistics()
        .namespace("zedi/dev")
        .metric_name(metric)
        .dimensions(
            Dimension::builder()
                .name("ServiceName")
                .value(service)
                .build(),
        )
        .start_time(aws_sdk_cloudwatch::primitives::DateTime::from(
            now - Duration::from_secs(600),
        ))
        .end_time(aws_sdk_cloudwatch::primitives::DateTime::from(
            now + Duration::from_secs(60),
        ))
        .period(60)
        .statistics(Statistic::Maximum)
        .send()
        .await
        .expect("GetMetricStatistics");
    out.datapoints()
        .iter()
        .filter_map(|d| d.maximum())
        .collect()
}

fn publishes(metrics: &common::Metrics, result: &str) -> f64 {
    metrics.value("zedi_cloudwatch_publish_total", &[("result", result)])
}

// One scenario read top to bottom: publish, read back, lose the emulator, keep serving.
#[tokio::test]
async fn put_metric_data_reaches_the_aws_api_emulator_and_failures_never_stop_serving() {
    let moto = Moto::start();
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let api_env = [
        ("ZEDI__CLOUDWATCH__MODE", "api"),
        ("ZEDI__CLOUDWATCH__INTERVAL_SECS", "1"),
        ("ZEDI__CLOUDWATCH__ENDPOINT_URL", endpoint.as_str()),
        ("ZEDI__CLOUDWATCH__REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &api_env);
    // A second node with the memory metric switched off, under its own dimension value so
    // that what it publishes can be told apart.
    let quiet_dir = tempfile::tempdir().unwrap();
    let mut quiet_env = api_env.to_vec();
    quiet_env.extend([
        ("ZEDI__CLOUDWATCH__MEMORY_METRIC_NAME", ""),
        ("ZEDI__CLOUDWATCH__DIMENSIONS", "ServiceName=zedi-no-memory"),
    ]);
    let quiet = Daemon::start(quiet_dir.path(), &quiet_env);
    let port = daemon.port;
    let clients = tokio::task::spawn_blocking(move || {
        (0..4)
            .map(|_| common::Client::connect(port))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if datapoints(&endpoint, "ActiveConnections", "zedi-realtime")
            .await
            .contains(&4.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ActiveConnections = 4 datapoint in the emulator"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Counted when the emulator's answer is back, which may be a moment after it shows the data.
    daemon.wait_metrics("a publish counted ok", |m| publishes(m, "ok") >= 1.0);
    // MemoryPressure went in the same call, with the same dimensions.
    let pressure = datapoints(&endpoint, "MemoryPressure", "zedi-realtime").await;
    assert!(
        !pressure.is_empty() && pressure.iter().all(|p| (0.0..=100.0).contains(p)),
        "MemoryPressure datapoints: {pressure:?}"
    );
    // The node without a memory metric name publishes ActiveConnections only.
    let deadline = Instant::now() + Duration::from_secs(20);
    while datapoints(&endpoint, "ActiveConnections", "zedi-no-memory")
        .await
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "no ActiveConnections from the node without a memory metric"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        datapoints(&endpoint, "MemoryPressure", "zedi-no-memory").await,
        Vec::<f64>::new(),
        "an empty cloudwatch.memory_metric_name must publish no MemoryPressure"
    );
    drop(quiet);

    // The API goes away: failures are counted, editing goes on.
    drop(moto);
    let deadline = Instant::now() + Duration::from_secs(20);
    while publishes(&daemon.metrics(), "error") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "publish failures were not counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let port = daemon.port;
    tokio::task::spawn_blocking(move || {
        let mut c = common::Client::connect(port);
        c.open("still-serving");
        c.send(
            "still-serving",
            Message::Sync(SyncMessage::Update(&text_update(5, "ok"))),
        );
        c.expect_ack("still-serving");
    })
    .await
    .unwrap();
    assert_eq!(daemon.health()["status"], "ok");
    drop(clients);
}

/// Every metric the daemon exposes is documented in docs/metrics.md, and every documented one
/// exists, so the catalogue cannot drift from the code.
#[test]
fn the_metrics_catalogue_matches_what_the_daemon_exposes() {
    let catalogue = std::fs::read_to_string(common::repo_path("docs/metrics.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let exposed: std::collections::BTreeSet<String> =
        daemon.metrics().families().map(String::from).collect();
    assert!(exposed.len() > 20, "{exposed:?}");
    for name in &exposed {
        assert!(
            catalogue.contains(&format!("`{name}`")),
            "{name} is not in docs/metrics.md"
        );
    }
    let documented: Vec<&str> = catalogue
        .split('`')
        .filter(|w| {
            w.len() > "zedi_".len()
                && w.starts_with("zedi_")
                && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .collect();
    for name in documented {
        assert!(
            exposed.contains(name),
            "docs/metrics.md lists {name}, which the daemon does not expose"
        );
    }
}
