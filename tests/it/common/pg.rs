//! A throwaway PostgreSQL cluster per test (scripts/pg-cluster.sh): own port, own data, TLS on,
//! password auth over TCP, destroyed on drop.

use std::path::PathBuf;
use std::process::Command;

pub struct PgCluster {
    dir: PathBuf,
    _parent: tempfile::TempDir,
    /// `postgres://postgres:postgres@127.0.0.1:PORT/postgres`
    pub url: String,
}

fn script() -> String {
    super::repo_path("scripts/pg-cluster.sh")
        .to_string_lossy()
        .into_owned()
}

fn run(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("run pg-cluster.sh");
    assert!(
        out.status.success(),
        "pg-cluster.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let parent = tempfile::tempdir().expect("temp dir");
        let dir = parent.path().join("pg");
        let url = run(&["start", dir.to_str().expect("utf-8 path")]);
        PgCluster {
            dir,
            _parent: parent,
            url,
        }
    }

    /// Fast shutdown, as an Aurora failover or a restart would look to clients.
    pub fn stop(&self) {
        run(&["stop", self.dir.to_str().expect("utf-8 path")]);
    }

    pub fn restart(&self) {
        run(&["restart", self.dir.to_str().expect("utf-8 path")]);
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The URL with its password removed (for the separate-password option).
    pub fn url_without_password(&self) -> String {
        self.url.replace("postgres:postgres@", "postgres@")
    }

    /// A connected tokio-postgres client (plain TCP) for checks from the test.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        tokio::spawn(connection);
        client
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("destroy")
            .arg(&self.dir)
            .output();
    }
}
