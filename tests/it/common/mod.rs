//! Test harness: runs the real `zedi-sync` binary on a free loopback port and talks to it
//! over real sockets. Every process is killed on drop; every wait is bounded.

pub mod awareness;
mod client;
pub mod metrics;
pub mod pg;
pub mod redis;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use client::{Client, Received};
pub use metrics::Metrics;

/// The daemon under test (`ZEDI_BIN`, see [`workspace_bin`]).
pub fn bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| workspace_bin("zedi-sync", "ZEDI_BIN"))
        .clone()
}

/// A binary of this workspace. This crate is not its package, so cargo does not hand it the
/// path: `env_var` (scripts/test.sh sets it from cargo's own report), else the directory above
/// this test executable's (`deps/`), where cargo puts every binary of the workspace for one
/// profile (`cargo nextest run` at the root builds them all first).
pub fn workspace_bin(name: &str, env_var: &str) -> PathBuf {
    let bin = std::env::var_os(env_var).map_or_else(
        || {
            let exe = std::env::current_exe().expect("the test executable's path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps/<test>");
            profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
        },
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "{} missing: build the workspace (cargo build --workspace) or set {env_var}",
        bin.display()
    );
    bin
}

/// A file of the repository (this crate lives in `tests/`).
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .join(relative)
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

pub struct Daemon {
    child: Option<Child>,
    pub port: u16,
    pub data: PathBuf,
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts a daemon with the embedded store in `data` and extra env overrides.
    pub fn start(data: &Path, extra_env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let env: Vec<(String, String)> = extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut daemon = Daemon {
            child: None,
            port,
            data: data.to_path_buf(),
            env,
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", self.port.to_string())
            .env("ZEDI__SERVER__HOST", "127.0.0.1")
            .env("ZEDI__STORE__PATH", self.data.join("zedi-sync.db"))
            .env("ZEDI__LOG__LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn zedi-sync"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some((200, _)) = http_get(self.port, "/health") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("zedi-sync did not become healthy on port {}", self.port);
    }

    /// Hard kill (SIGKILL), as a crashed task would die.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
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

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn ws(&self) -> Client {
        Client::connect(self.port)
    }

    pub fn health(&self) -> serde_json::Value {
        let (status, body) = http_get(self.port, "/health").expect("health answers");
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("health is JSON")
    }

    pub fn metrics(&self) -> Metrics {
        Metrics::fetch(self.port)
    }

    /// Scrapes `/metrics` until `cond` holds (bounded); returns that scrape. A timeout fails the
    /// test with `what` and the last scrape.
    pub fn wait_metrics(&self, what: &str, cond: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let metrics = self.metrics();
            if cond(&metrics) {
                return metrics;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last /metrics:\n{metrics}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `/health` satisfies `cond` (bounded).
    pub fn wait_health(&self, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if cond(&self.health()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}: {}", self.health());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Minimal HTTP/1.1 GET over loopback; returns (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// A Yjs update that inserts `text` at the start of Y.Text "default" from client `client`.
pub fn text_update(client: u64, text: &str) -> Vec<u8> {
    use yrs::{Text, Transact};
    let doc = yrs::Doc::with_client_id(client);
    let t = doc.get_or_insert_text("default");
    let mut txn = doc.transact_mut();
    t.insert(&mut txn, 0, text);
    txn.encode_update_v1()
}

/// The Y.Text "default" of a document made from `updates`.
pub fn render(updates: &[&[u8]]) -> String {
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Transact};
    let doc = yrs::Doc::new();
    let t = doc.get_or_insert_text("default");
    let mut txn = doc.transact_mut();
    for u in updates {
        txn.apply_update(yrs::Update::decode_v1(u).expect("decodes"))
            .expect("applies");
    }
    t.get_string(&txn)
}

impl Daemon {
    /// Process id of the running daemon (for tools that read its `/proc` entries).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("daemon is running")
    }
}

impl Daemon {
    /// How the daemon process ended, if it has (a crash shows as a signal), without waiting:
    /// tests of hostile input report "killed by SIGSEGV" instead of a bare connection error.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }
}

/// Polls `cond` until it holds, for at most `timeout`; a timeout fails the test naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resident memory of a process, in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}
