//! The binary edge: command line, logging, and the actix system. Errors become `anyhow` here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zedi_sync::config::Settings;

// The global allocator is the binary's choice alone: the library and its tests keep the system
// one. glibc's malloc keeps the memory of unloaded documents (RSS stays at its peak), which a
// 512 MB task cannot afford; BENCHMARKS.md "Memory: RSS after load" measures all three.
// Precedence when several features are on: system, then mimalloc, then jemalloc (the default).
#[cfg(all(
    feature = "jemalloc",
    not(feature = "mimalloc"),
    not(feature = "system")
))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once before `main` (jemalloc reads `malloc_conf` at its first
/// allocation; this symbol overrides its weak default). Background threads purge freed pages
/// without waiting for another allocation on the same arena; the decay times say how long
/// unused dirty (then muzzy, i.e. MADV_FREE'd) pages are kept for re-use before they go back to
/// the OS. `_RJEM_MALLOC_CONF` in the environment still overrides these at run time.
#[cfg(all(
    feature = "jemalloc",
    not(feature = "mimalloc"),
    not(feature = "system")
))]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
// An array reference: one pointer to the C string, as jemalloc's `const char *` expects.
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[cfg(all(feature = "mimalloc", not(feature = "system")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Which allocator this binary was built with, for the startup log.
const ALLOCATOR: &str = if cfg!(feature = "system") {
    "system"
} else if cfg!(feature = "mimalloc") {
    "mimalloc"
} else if cfg!(feature = "jemalloc") {
    "jemalloc"
} else {
    "system"
};

#[derive(Parser)]
#[command(
    name = "zedi-sync",
    version,
    about = "Hocuspocus-compatible Yjs sync daemon"
)]
struct Cli {
    /// TOML file layered over the built-in config/default.toml.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Print the effective configuration (secrets redacted) and exit non-zero if it is invalid.
    CheckConfig,
    /// Ask the local daemon's /health (for Docker's HEALTHCHECK; needs no curl): exit 0 when it
    /// answers 200, 1 otherwise.
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("zedi-sync: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            print!("{}", settings.redacted_toml());
            ExitCode::SUCCESS
        }
        Command::Healthcheck => match healthcheck(settings.server.port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("zedi-sync healthcheck: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run => match run(settings) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("zedi-sync: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(settings: Settings) -> anyhow::Result<()> {
    settings.log.init();
    tracing::info!(allocator = ALLOCATOR, "global allocator");
    let system = actix_web::rt::System::new();
    system.block_on(zedi_sync::server::run(settings))?;
    Ok(())
}

/// GET http://127.0.0.1:PORT/health with a plain socket: the runtime image has no curl.
fn healthcheck(port: u16) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::time::Duration;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.take(64 * 1024).read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).unwrap_or_default();
    anyhow::ensure!(status == "200", "/health answered {status:?}");
    Ok(())
}
