//! Test harness: runs the real `zedi-sync` binary on a free loopback port and talks to it
//! over real sockets. Every process is killed on drop; every wait is bounded.

pub mod awareness;
pub mod metrics;
pub mod pg;
pub mod redis;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tungstenite::{Message as WsMessage, WebSocket, stream::MaybeTlsStream};
use zedi_sync::protocol::{self, AuthMessage, Message, Packet, SyncMessage};

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

/// What the server sent, decoded.
#[derive(Debug)]
pub enum Received {
    Frame(Vec<u8>),
    Closed(Option<(u16, String)>),
    TimedOut,
}

pub struct Client {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let (ws, _) = tungstenite::connect(format!("ws://127.0.0.1:{port}/any/path?x=1"))
            .expect("ws connect");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
        }
        Client { ws }
    }

    pub fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws.send(WsMessage::Binary(bytes.into())).expect("send");
    }

    pub fn send(&mut self, address: &str, message: Message<'_>) {
        self.send_raw(protocol::encode(address, &message));
    }

    /// Auth with a token as the v4 provider does (token, then its version).
    pub fn auth(&mut self, address: &str) {
        self.send(
            address,
            Message::Auth(AuthMessage::Token {
                token: "any",
                provider_version: Some("4.8.0"),
            }),
        );
    }

    /// Next binary frame or close, skipping pings, within `timeout`; a broken connection
    /// fails the test.
    pub fn recv(&mut self, timeout: Duration) -> Received {
        self.try_recv(timeout)
            .unwrap_or_else(|e| panic!("websocket error: {e}"))
    }

    /// Reads frames until one matches `pred` (bounded); returns the frame.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&str, &Message<'_>) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.recv(Duration::from_millis(500)) {
                Received::Frame(f) => {
                    if let Ok(Packet::Message { address, message }) = protocol::decode(&f)
                        && pred(address, &message)
                    {
                        return f;
                    }
                }
                Received::Closed(c) => panic!("closed while waiting for {what}: {c:?}"),
                Received::TimedOut => {}
            }
        }
        panic!("timed out waiting for {what}");
    }

    /// Expects the socket to be closed with `code` (bounded).
    pub fn expect_close(&mut self, code: u16) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.recv(Duration::from_millis(500)) {
                Received::Closed(Some((c, reason))) => {
                    assert_eq!(c, code, "close code (reason {reason:?})");
                    return reason;
                }
                Received::Closed(None) => panic!("closed without a code, expected {code}"),
                _ => {}
            }
        }
        panic!("socket was not closed with {code}");
    }

    /// Auth + SyncStep1 (empty state vector); waits for Authenticated and the server's Step2.
    /// Returns the Step2 payload (the document content as an update).
    pub fn open(&mut self, address: &str) -> Vec<u8> {
        self.auth(address);
        self.expect("Authenticated", |a, m| {
            a == address
                && matches!(
                    m,
                    Message::Auth(AuthMessage::Authenticated {
                        scope: "read-write"
                    })
                )
        });
        self.send(address, Message::Sync(SyncMessage::Step1(&[0])));
        let frame = self.expect("SyncStep2", |a, m| {
            a == address && matches!(m, Message::Sync(SyncMessage::Step2(_)))
        });
        match protocol::decode(&frame) {
            Ok(Packet::Message {
                message: Message::Sync(SyncMessage::Step2(p)),
                ..
            }) => p.to_vec(),
            _ => unreachable!("matched above"),
        }
    }

    /// Collects the updates broadcast on `address` until the text they make satisfies `done`
    /// (bounded). The server may merge updates that arrive together into one, so tests look
    /// for content, not for a number of frames. Returns the text.
    pub fn expect_text(
        &mut self,
        address: &str,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let mut updates: Vec<Vec<u8>> = Vec::new();
        loop {
            let frame = self.expect(what, |a, m| {
                a == address && matches!(m, Message::Sync(SyncMessage::Update(_)))
            });
            if let Ok(Packet::Message {
                message: Message::Sync(SyncMessage::Update(u)),
                ..
            }) = protocol::decode(&frame)
            {
                updates.push(u.to_vec());
            }
            let refs: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
            let text = render(&refs);
            if done(&text) {
                return text;
            }
        }
    }

    pub fn expect_ack(&mut self, address: &str) {
        self.expect("SyncStatus(1)", |a, m| {
            a == address && matches!(m, Message::SyncStatus(true))
        });
    }
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

impl Client {
    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(WsMessage::Text(text.to_string().into()))
            .expect("send text");
    }

    /// Next binary frame as is (pings included), or None on timeout.
    pub fn recv_raw(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(WsMessage::Binary(b)) => return Some(b.to_vec()),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => panic!("websocket error: {e}"),
            }
        }
        None
    }
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

impl Client {
    /// Like `recv`, but a connection that breaks (the daemon died) is an `Err` rather than a
    /// panic, so the caller can find out and say why.
    pub fn try_recv(&mut self, timeout: Duration) -> Result<Received, String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(WsMessage::Binary(b)) if b.as_ref() == protocol::PING_FRAME => continue,
                Ok(WsMessage::Binary(b)) => return Ok(Received::Frame(b.to_vec())),
                Ok(WsMessage::Close(frame)) => {
                    return Ok(Received::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ));
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(Received::Closed(None));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(Received::TimedOut)
    }

    /// Sends a frame, reporting a broken connection instead of panicking.
    pub fn try_send(&mut self, address: &str, message: Message<'_>) -> Result<(), String> {
        self.ws
            .send(WsMessage::Binary(
                protocol::encode(address, &message).into(),
            ))
            .map_err(|e| e.to_string())
    }
}

impl Client {
    /// Connects as if through the ALB for client address `ip` (127.0.0.1 is a trusted proxy
    /// by default, so the daemon believes X-Forwarded-For).
    pub fn connect_as(port: u16, ip: &str) -> Client {
        let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://127.0.0.1:{port}/"
        ))
        .expect("request");
        request
            .headers_mut()
            .insert("x-forwarded-for", ip.parse().expect("header value"));
        let (ws, _) = tungstenite::connect(request).expect("ws connect");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
        }
        Client { ws }
    }

    /// Starts a masked binary frame that declares `declared` payload bytes and sends only
    /// `sent` of them (zeros, under an all-zero mask), as a client that never finishes a frame.
    pub fn send_partial_frame(&mut self, declared: u64, sent: usize) {
        use std::io::Write;
        let MaybeTlsStream::Plain(stream) = self.ws.get_mut() else {
            panic!("a plain socket");
        };
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&declared.to_be_bytes());
        head.extend_from_slice(&[0, 0, 0, 0]);
        stream.write_all(&head).expect("write");
        stream.write_all(&vec![0u8; sent]).expect("write");
        stream.flush().expect("flush");
    }

    /// Sends many binary frames in as few TCP writes as possible (buffered, one flush), as a
    /// client that floods would.
    pub fn send_batch(&mut self, frames: Vec<Vec<u8>>) {
        for frame in frames {
            self.ws
                .write(WsMessage::Binary(frame.into()))
                .expect("write");
        }
        self.ws.flush().expect("flush");
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
