use std::process::ExitCode;

use ca_server::cli::{AuditCommand, Cli, Command, StorageCommand};
use ca_server::{client, offline, server};
use clap::Parser;

/// glibc malloc showed up at ~5% of server CPU under load (arena contention between the
/// tokio, signing and log-writer threads); mimalloc removes most of it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// A multi-thread tokio runtime; `threads` workers, or tokio's default (one per core).
/// `serve` passes `[signing] io_threads` (the signing pool has its own threads).
fn runtime(
    threads: Option<usize>,
) -> Result<tokio::runtime::Runtime, Box<dyn std::error::Error + Send + Sync>> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n);
    }
    Ok(b.enable_all().build()?)
}

fn run(cli: Cli) -> Result<u8, Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        Command::Serve { dir, grpc_addr, http_addr, public_url, insecure_grpc, acme } => {
            let mut config = dir.resolve()?;
            if let Some(a) = grpc_addr {
                config.grpc_addr = a;
            }
            if let Some(a) = http_addr {
                config.http_addr = a;
            }
            if public_url.is_some() {
                config.public_url = public_url;
            }
            if insecure_grpc {
                config.grpc.insecure = true;
            }
            acme.apply(&mut config.acme);
            runtime(Some(config.io_threads()))?.block_on(async {
                let running = server::start(config).await?;
                // Scripts and tests read this line to learn the bound ports.
                match running.acme_addr {
                    Some(a) => println!(
                        "ca-server ready grpc={} http={} acme={a}",
                        running.grpc_addr, running.http_addr
                    ),
                    None => println!("ca-server ready grpc={} http={}", running.grpc_addr, running.http_addr),
                }
                server::shutdown_signal().await;
                tracing::info!("shutting down");
                running.shutdown().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(0)
            })
        }
        Command::Init { dir, key_algorithm, import_cert, import_key, import_chain, offline_root, pkcs11 } => {
            let config = dir.resolve()?;
            let import = match (&import_cert, &import_key) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path(), import_chain.as_deref())),
                _ => None,
            };
            offline::init(
                &config.data_dir.clone(),
                config,
                key_algorithm.as_deref(),
                import,
                offline_root.as_deref(),
                pkcs11,
            )?;
            Ok(0)
        }
        Command::Audit { command: AuditCommand::Verify { dir } } => {
            Ok(offline::audit_verify(&dir.resolve()?)? as u8)
        }
        Command::Audit { command: AuditCommand::Rebuild { dir } } => {
            offline::rebuild(&dir.resolve()?)?;
            Ok(0)
        }
        Command::Storage { command: StorageCommand::Migrate { dir, to } } => {
            offline::migrate(&dir.resolve()?.data_dir, &to)?;
            Ok(0)
        }
        Command::Events { dir, from } => {
            offline::events(&dir.resolve()?, from)?;
            Ok(0)
        }
        Command::Acme { conn, command } => {
            runtime(None)?.block_on(client::acme(&conn, command))?;
            Ok(0)
        }
        Command::Ca { conn, command } => {
            runtime(None)?.block_on(client::ca(&conn, command))?;
            Ok(0)
        }
        Command::Client { conn, command } => {
            runtime(None)?.block_on(client::run(&conn, command))?;
            Ok(0)
        }
    }
}
