//! zedi-bench: a load generator speaking the Hocuspocus protocol with real Yjs updates.
//!
//! Scenario `throughput`: W writers, each on its own WebSocket (and by default its own
//! document), run a closed loop with `--in-flight` updates outstanding; an update counts when
//! its `SyncStatus(1)` arrives, which the daemon sends only once the update is durable.
//!
//! ```sh
//! zedi-bench --url ws://127.0.0.1:1234 --writers 1,10,100 --seconds 10
//! ```
//! stdout: one JSON line per measurement; stderr: the machine header and a human table.
//! Only loopback targets are accepted. `--scenario churn` (memory returned after documents
//! unload) is driven by `scripts/memory-bench.sh`, which starts the daemon for it; `docmem`
//! (RSS per open idle document) and `joinstorm` (many clients joining one large document) by
//! `ops/bench/compare.sh`.
//! `zedi-bench relay --port P` is no generator but the bare relay `ops/bench/compare.sh`
//! measures the daemon against.

mod aconn;
mod args;
mod attack;
mod docmem;
mod fanout;
mod joinstorm;
mod machine;
mod memory;
mod relay;
mod scenarios;
mod throughput;
mod typing;
mod writer;

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use args::{Args, Mode, Scenario, loopback_target};

/// The target of the event-driven scenarios, and the other nodes for `--reader-urls`.
fn targets(
    args: &Args,
    addr: SocketAddr,
) -> anyhow::Result<(Arc<scenarios::Target>, Vec<Arc<scenarios::Target>>)> {
    let target = Arc::new(scenarios::Target {
        addr,
        url: args.url.clone(),
    });
    let mut readers = Vec::new();
    for u in &args.reader_urls {
        let (a, _) = loopback_target(u)?;
        readers.push(Arc::new(scenarios::Target {
            addr: a,
            url: u.clone(),
        }));
    }
    Ok((target, readers))
}

/// The attack mix, then what is left once it is over and the documents unloaded.
fn attack_and_settle(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    target: &scenarios::Target,
) -> anyhow::Result<serde_json::Value> {
    let Some(server_pid) = args.server_pid else {
        bail!("--scenario attack reads the daemon's memory: give --server-pid");
    };
    let mut v = attack::attack(
        target.addr,
        attack::AttackArgs {
            duration: Duration::from_secs_f64(args.seconds),
            server_pid,
            stuck_readers: 20,
            preauth_sockets: 80,
            long_id_sockets: 20,
            partial_frames: 20,
            awareness_sockets: 10,
            churn_threads: 4,
        },
    );
    let probe = memory::Probe { pid: server_pid };
    rt.block_on(memory::wait_documents(
        target,
        0,
        Duration::from_secs_f64(args.unload_timeout),
    ));
    let series = rt.block_on(probe.settle(Duration::from_secs(args.settle)));
    v["after_settle_rss_mib"] =
        serde_json::json!(series.last().map_or(0.0, |kb| *kb as f64 / 1024.0));
    Ok(v)
}

fn churn(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    target: Arc<scenarios::Target>,
    documents: usize,
    run_id: &str,
) -> anyhow::Result<serde_json::Value> {
    let Some(server_pid) = args.server_pid else {
        bail!("--scenario churn reads the daemon's memory: give --server-pid");
    };
    Ok(rt.block_on(memory::churn(
        target,
        memory::ChurnArgs {
            documents,
            doc_bytes: args.doc_kib * 1024,
            concurrency: args.concurrency.unwrap_or(256),
            setup_timeout: Duration::from_secs_f64(args.setup_timeout),
            unload_timeout: Duration::from_secs_f64(args.unload_timeout),
            settle: Duration::from_secs(args.settle),
            server_pid,
        },
        run_id,
    )))
}

/// Every scenario but `throughput`: one JSON object.
fn run_event_driven(
    args: &Args,
    addr: SocketAddr,
    run_id: &str,
) -> anyhow::Result<serde_json::Value> {
    let documents = args::event_driven_documents(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let (target, readers) = targets(args, addr)?;
    let v = match args.scenario {
        Scenario::Ramp => rt.block_on(scenarios::ramp(
            target,
            scenarios::RampArgs {
                connections: args.connections,
                documents,
                concurrency: args.concurrency.unwrap_or(256),
                timeout: Duration::from_secs_f64(args.setup_timeout),
                hold: Duration::from_secs_f64(args.hold),
                server_pid: args.server_pid,
            },
            run_id,
        )),
        Scenario::Fanout => rt.block_on(fanout::fanout(
            target,
            readers,
            fanout::FanoutArgs {
                documents,
                subscribers: args.subscribers,
                rate: args.rate,
                warmup: Duration::from_secs_f64(args.warmup),
                seconds: Duration::from_secs_f64(args.seconds),
                setup_timeout: Duration::from_secs_f64(args.setup_timeout),
                concurrency: args.concurrency.unwrap_or(256),
                server_pid: args.server_pid,
            },
            run_id,
        )),
        Scenario::Churn => churn(&rt, args, target, documents, run_id)?,
        Scenario::Attack => attack_and_settle(&rt, args, &target)?,
        Scenario::Docmem => {
            let Some(server_pid) = args.server_pid else {
                bail!("--scenario docmem reads the daemon's memory: give --server-pid");
            };
            rt.block_on(docmem::docmem(
                target,
                docmem::DocmemArgs {
                    documents,
                    doc_bytes: args.doc_kib * 1024,
                    typists: args.typists,
                    concurrency: args.concurrency.unwrap_or(256),
                    setup_timeout: Duration::from_secs_f64(args.setup_timeout),
                    idle: Duration::from_secs_f64(args.idle),
                    unload_timeout: Duration::from_secs_f64(args.unload_timeout),
                    settle: Duration::from_secs(args.settle),
                    server_pid,
                },
                run_id,
            ))
        }
        Scenario::Joinstorm => rt.block_on(joinstorm::joinstorm(
            target,
            joinstorm::JoinstormArgs {
                connections: args.connections,
                doc_bytes: args.doc_kib * 1024,
                typists: args.typists,
                concurrency: args.concurrency.unwrap_or(args.connections),
                setup_timeout: Duration::from_secs_f64(args.setup_timeout),
                idle: Duration::from_secs_f64(args.idle),
                server_pid: args.server_pid,
            },
            run_id,
        )),
        Scenario::Throughput => unreachable!(),
    };
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(v)
}

fn print_header(args: &Args, m: &machine::Machine, store: &str) {
    eprintln!(
        "zedi-bench {} -> {} (store: {store})",
        m.bench_version, args.url
    );
    eprintln!(
        "machine: {} x{} cores, {} MiB RAM, Linux {}",
        m.cpu_model, m.cores, m.mem_total_mib, m.kernel
    );
    eprintln!(
        "rustc: {}; zedi-sync (server): {}",
        m.rustc, m.server_version
    );
    eprintln!(
        "scenario {:?}: in-flight {} per writer, {} document(s), warm-up {}s, measured {}s per writer count",
        args.scenario,
        args.in_flight,
        if args.shared_doc {
            "one shared"
        } else {
            "one per writer"
        },
        args.warmup,
        args.seconds
    );
}

/// A JSON line on stdout and, with `--out`, appended to that file.
fn emit(out: &mut Option<File>, line: &str) -> anyhow::Result<()> {
    println!("{line}");
    if let Some(f) = out.as_mut() {
        writeln!(f, "{line}")?;
    }
    Ok(())
}

/// The throughput scenario: one measurement per writer count, then the table.
fn run_throughputs(
    args: &Args,
    addr: SocketAddr,
    store: &str,
    run_id: &str,
    out: &mut Option<File>,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (i, &w) in args.writers.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_secs_f64(args.pause));
        }
        eprintln!("... {w} writer(s)");
        let (meas, notes) = throughput::run_throughput(args, addr, store, run_id, w)?;
        for n in notes.iter().take(10) {
            eprintln!("    note: {n}");
        }
        if notes.len() > 10 {
            eprintln!("    ({} more notes)", notes.len() - 10);
        }
        emit(out, &serde_json::to_string(&meas)?)?;
        rows.push(meas);
    }
    throughput::print_table(&rows);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Mode::Relay(relay)) = &args.mode {
        return relay::run(relay);
    }
    args::validate(&args)?;
    let (addr, host) = loopback_target(&args.url)?;
    let health = machine::health(addr, &host);
    if health.is_none() {
        eprintln!("warning: no answer from http://{host}/health; continuing");
    }
    let m = machine::describe(health.as_ref());
    let store = args.store.clone().unwrap_or_else(|| m.store_kind.clone());
    print_header(&args, &m, &store);

    let mut out = match &args.out {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => None,
    };
    if let Some(f) = out.as_mut() {
        writeln!(f, "{}", serde_json::json!({ "machine": m }))?;
    }

    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    if matches!(args.scenario, Scenario::Throughput) {
        return run_throughputs(&args, addr, &store, &run_id, &mut out);
    }
    let mut v = run_event_driven(&args, addr, &run_id)?;
    v["store"] = serde_json::Value::String(store.clone());
    v["server_version"] = serde_json::Value::String(m.server_version.clone());
    emit(&mut out, &serde_json::to_string(&v)?)?;
    eprintln!();
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            eprintln!("  {k:<28} {val}");
        }
    }
    match args.scenario {
        Scenario::Docmem => eprintln!("\n{}", docmem::summary(&v)),
        Scenario::Joinstorm => eprintln!("\n{}", joinstorm::summary(&v)),
        _ => {}
    }
    Ok(())
}
