//! What the numbers were measured on, and CPU time of this process (and optionally the server).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub mem_total_mib: u64,
    pub kernel: String,
    pub rustc: String,
    pub bench_version: &'static str,
    /// From the server's `/health` (`version`), if it answered.
    pub server_version: String,
    pub store_kind: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn describe(health: Option<&serde_json::Value>) -> Machine {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_total_mib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0);
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unavailable".into());
    let field = |k: &str| {
        health
            .and_then(|h| h.get(k))
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string()
    };
    Machine {
        cpu_model,
        cores: if cores > 0 {
            cores
        } else {
            std::thread::available_parallelism().map_or(0, |n| n.get())
        },
        mem_total_mib,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        rustc,
        bench_version: env!("CARGO_PKG_VERSION"),
        server_version: field("version"),
        store_kind: field("store_kind"),
    }
}

/// utime + stime of a process, in seconds, from `/proc/PID/stat` (USER_HZ is 100 on Linux).
/// Includes threads that already exited.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces: fields are counted after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// `GET /health` on the daemon (plain HTTP/1.1 over loopback, bounded by timeouts).
pub fn health(addr: SocketAddr, host: &str) -> Option<serde_json::Value> {
    let body = get(addr, host, "/health")?;
    let json = &body[body.find('{')?..=body.rfind('}')?];
    serde_json::from_str(json).ok()
}

/// The body of `GET path` on the daemon (at most 8 MiB), bounded by timeouts.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    get(addr, &addr.to_string(), path)
}

fn get(addr: SocketAddr, host: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.take(8 << 20).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}
