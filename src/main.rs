//! The binary edge: command line, logging, and the actix system. Errors become `anyhow` here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zedi_sync::config::{LogFormat, Settings};

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

fn init_logging(settings: &Settings) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(settings: Settings) -> anyhow::Result<()> {
    init_logging(&settings);
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
