use std::process::ExitCode;

use ca_loadtest::cli::{Cli, Command};
use ca_loadtest::{calibrate, run};
use clap::Parser;

fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    b.worker_threads(threads.unwrap_or(ca_loadtest::report::available_cores() / 2).max(1));
    b.build()
}

fn emit<T: serde::Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) -> ExitCode {
    if json {
        match serde_json::to_string(value) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("ca-loadtest: cannot serialize the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", human());
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let progress = !cli.quiet;
    let result = match &cli.command {
        Command::Calibrate(a) => {
            return match calibrate::run(a, progress) {
                Ok(r) => emit(cli.json, &r, || r.render()),
                Err(e) => {
                    eprintln!("ca-loadtest calibrate: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Acme(a) => {
            let r = runtime(a.load.threads)
                .map_err(|e| format!("tokio runtime: {e}"))
                .and_then(|rt| rt.block_on(run::acme(a, progress)));
            return match r {
                Ok(r) => emit(cli.json, &r, || r.render()),
                Err(e) => {
                    eprintln!("ca-loadtest acme: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::GrpcSign(a) => runtime(a.load.threads)
            .map_err(|e| format!("tokio runtime: {e}"))
            .and_then(|rt| rt.block_on(run::grpc_sign(a, progress))),
        Command::Handshake(a) => runtime(a.load.threads)
            .map_err(|e| format!("tokio runtime: {e}"))
            .and_then(|rt| rt.block_on(run::handshake(a, progress))),
        Command::Ocsp(a) => runtime(a.load.threads)
            .map_err(|e| format!("tokio runtime: {e}"))
            .and_then(|rt| rt.block_on(run::ocsp(a, progress))),
    };
    match result {
        Ok(r) => emit(cli.json, &r, || r.render()),
        Err(e) => {
            eprintln!("ca-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}
