//! A throwaway redis-server per test on a free loopback port (no persistence), optionally
//! with TLS and an AUTH password, that can be restarted on the same port, paused (SIGSTOP) and
//! resumed. Killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    tls: Option<(PathBuf, String)>,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::launch(None)
    }

    /// TLS only (no plain port) with `requirepass`, like ElastiCache with an AUTH token.
    pub fn start_tls(password: &str) -> RedisServer {
        Self::launch(Some(password.to_string()))
    }

    fn launch(tls_password: Option<String>) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = tls_password.map(|password| {
            let key = dir.path().join("key.pem");
            let cert = dir.path().join("cert.pem");
            let ok = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                ])
                .args([
                    "-days",
                    "1",
                    "-subj",
                    "/CN=localhost",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null())
                .status()
                .expect("run openssl");
            assert!(ok.success(), "openssl failed");
            (dir.path().to_path_buf(), password)
        });
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            tls,
            _dir: dir,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.tls {
            None => {
                cmd.arg("--port").arg(self.port.to_string());
            }
            Some((dir, password)) => {
                cmd.args(["--port", "0", "--tls-port"])
                    .arg(self.port.to_string())
                    .arg("--tls-cert-file")
                    .arg(dir.join("cert.pem"))
                    .arg("--tls-key-file")
                    .arg(dir.join("key.pem"))
                    .arg("--tls-ca-cert-file")
                    .arg(dir.join("cert.pem"))
                    .args(["--tls-auth-clients", "no", "--requirepass", password]);
            }
        }
        self.child = Some(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on {}", self.port);
    }

    pub fn url(&self) -> String {
        match &self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            // `#insecure`: the test certificate is self-signed.
            Some((_, password)) => {
                format!("rediss://:{password}@127.0.0.1:{}/#insecure", self.port)
            }
        }
    }

    /// Stops the server (data is lost: no persistence, like a failed-over cache).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(sig)
                .arg(child.id().to_string())
                .status();
        }
    }

    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.stop();
    }
}
