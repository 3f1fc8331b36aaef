//! Commands that work on a data dir without a running server: `init`, `audit verify`,
//! `events`.

use std::io::Write;
use std::path::Path;

use ca_core::ca;
use ca_core::keys::KeyAlgorithm;

use crate::app;
use crate::config::Config;
use crate::error::AppError;
use crate::render::record_json;

pub fn init(
    dir: &Path,
    mut config: Config,
    key_algorithm: Option<&str>,
    import: Option<(&Path, &Path, Option<&Path>)>,
    offline_root: Option<&Path>,
    pkcs11: bool,
) -> Result<(), AppError> {
    if offline_root.is_some() && import.is_some() {
        return Err(AppError::Config(
            "--offline-root is for a generated root; an imported CA brings no root key".into(),
        ));
    }
    if let Some(a) = key_algorithm {
        config.ca.key_algorithm = KeyAlgorithm::parse(a)?;
    }
    match (&config.ca.pkcs11, pkcs11) {
        (None, true) => {
            return Err(AppError::Config(
                "--pkcs11 needs a [ca.pkcs11] section (module, token_label, key_label, pin_file) in the --config file"
                    .into(),
            ));
        }
        (Some(_), false) => {
            return Err(AppError::Config(
                "[ca.pkcs11] is set: the issuing key goes in the token; run `init --pkcs11`".into(),
            ));
        }
        _ => {}
    }
    let material = match import {
        Some((cert, key, chain)) => {
            let read = |p: &Path| {
                std::fs::read_to_string(p)
                    .map_err(|e| AppError::Config(format!("reading {}: {e}", p.display())))
            };
            let chain = chain.map(read).transpose()?;
            Some(ca::import(&read(cert)?, &read(key)?, chain.as_deref())?)
        }
        None => None,
    };
    let store = app::open_store_for(&config, ca_storage::StoreOptions::default())?;
    if store.ca()?.is_some() {
        return Err(AppError::Config(format!("{} already holds a CA", dir.display())));
    }
    let material = match (material, &config.ca.pkcs11) {
        (None, Some(p)) => Some(crate::pkcs11::generate_ca(&config, p)?),
        (m, _) => m,
    };
    let (issuers, _) = app::ensure_ca(&store, dir, &config, material, offline_root)?;
    let ca = issuers.last().cloned().ok_or_else(|| AppError::Config("no issuing CA".into()))?;
    let urls = ca_core::issue::PublicUrls::from_base(&config.public_url(config.http_addr))?;
    let policy = ca_core::policy::Policy::new(config.policy.clone())?;
    let authority = ca_core::issue::Authority::new(ca, policy, config.profiles.clone(), &urls)?;
    crate::credential::issue_offline(&store, dir, &authority)?;
    store.flush()?;
    println!("initialized CA in {}; root certificate: {}", dir.display(), dir.join("root.pem").display());
    if let Some(out) = offline_root {
        println!(
            "root key: {} (take it off this server; `ca-server ca rotate --csr-out` / `--import-signed` rotate with it)",
            out.join("root.key").display()
        );
    }
    println!(
        "admin client credential: {} and {} (used by `ca-server client` and `ca-server acme`)",
        dir.join("admin.pem").display(),
        dir.join("admin.key").display()
    );
    Ok(())
}

/// Exit status: 0 when intact; 1 when broken (with the first bad record).
pub fn audit_verify(config: &crate::config::Config) -> Result<i32, AppError> {
    let verdict = match (config.storage.backend, &config.storage.url) {
        (crate::config::Backend::Postgres, Some(url)) => {
            let mut last = std::time::Instant::now();
            ca_storage::verify_postgres(url, &mut |n| {
                if last.elapsed().as_secs() >= 2 {
                    eprintln!("verified {n} records");
                    last = std::time::Instant::now();
                }
            })
        }
        // Read-only: a normal open refuses a log whose last record was altered, and the
        // audit must still be able to name that record.
        _ => app::open_store_read_only(&config.data_dir)?.verify_chain(),
    };
    match verdict {
        Ok(report) => {
            println!("ok: {} records, head hash {}", report.records, hex::encode(report.head));
            Ok(0)
        }
        Err(f) => {
            println!("BROKEN at record {}: {}", f.seq, f.detail);
            Ok(1)
        }
    }
}

/// `storage migrate --to URL`: copy the data dir's sled log into an empty database.
pub fn migrate(dir: &Path, url: &str) -> Result<(), AppError> {
    let log = app::DataDir(dir.to_path_buf()).log();
    if !log.exists() {
        return Err(AppError::Config(format!("{} holds no event log", dir.display())));
    }
    let started = std::time::Instant::now();
    let mut last = started;
    let report = ca_storage::migrate_to_postgres(&log, url, &mut |done, total| {
        if last.elapsed().as_secs() >= 2 || done == total {
            eprintln!("copied {done} of {total} records");
            last = std::time::Instant::now();
        }
    })
    .map_err(|e| AppError::Config(format!("migration failed: {e}")))?;
    println!(
        "ok: {} records copied and verified in {:.1} s, head hash {}; now start the server with --storage-url",
        report.records,
        started.elapsed().as_secs_f64(),
        hex::encode(report.head)
    );
    Ok(())
}

pub fn rebuild(config: &crate::config::Config) -> Result<(), AppError> {
    if config.storage.backend == crate::config::Backend::Postgres {
        return Err(AppError::Config(
            "audit rebuild works on the sled log; on PostgreSQL the projection tables are written in the \
             log's own transactions and `audit verify --storage-url` checks them against a fold of the log. \
             To rebuild an instance's replica, stop it and remove DATA_DIR/pg-replica: it copies the log again at start"
                .into(),
        ));
    }
    let store = app::open_store(&config.data_dir)?;
    let started = std::time::Instant::now();
    let n = store.rebuild_projections()?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rebuilt projections from {n} records in {secs:.2} s ({:.0} records/s)",
        n as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// The log as JSON lines, from the sled data dir or, on PostgreSQL, from the database
/// (its chain checked as it is read).
pub fn events(config: &crate::config::Config, from: u64) -> Result<(), AppError> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // `false` when the reader went away (e.g. `| head`).
    let mut print = |rec: &ca_storage::StoredRecord| {
        let line = record_json(rec.seq, &rec.prev_hash, &rec.hash, rec.recorded_at_micros, &rec.event);
        writeln!(out, "{line}").is_ok()
    };
    match (config.storage.backend, &config.storage.url) {
        (crate::config::Backend::Postgres, Some(url)) => {
            let (tx, rx) = std::sync::mpsc::sync_channel::<ca_storage::StoredRecord>(1024);
            let url = url.clone();
            let reader = std::thread::spawn(move || {
                ca_storage::read_postgres(&url, from, &mut |rec| tx.send(rec).is_ok())
            });
            for rec in rx {
                if !print(&rec) {
                    break;
                }
            }
            reader.join().map_err(|_| AppError::Internal("the log reader panicked".into()))??;
        }
        _ => {
            let store = app::open_store_read_only(&config.data_dir)?;
            for rec in store.range(from) {
                if !print(&rec?) {
                    break;
                }
            }
        }
    }
    let _ = out.flush();
    Ok(())
}
