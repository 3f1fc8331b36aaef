//! After each restart: is everything the ledger says was acknowledged there, once?

use std::collections::{HashMap, HashSet};
use std::path::Path;

use ca_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use ca_proto::v1::{CertificateStatus, GetCertificateRequest, WatchEventsRequest, event};
use futures::StreamExt;
use instant_acme::{Account, AccountCredentials, Key, OrderStatus};
use rustls::pki_types::PrivateKeyDer;
use tonic::transport::Channel;

use super::load::Ledger;
use crate::common::acme::AcmeEnv;
use crate::common::{list_all, next_seq, openssl};

/// One kind of acknowledged thing: how many, how many were found, how many are in the log
/// (or the listing) more than once, and the first few that were missing.
#[derive(Default, Debug)]
pub struct Tally {
    pub acknowledged: usize,
    pub found: usize,
    pub duplicated: usize,
    pub missing: Vec<String>,
}

impl Tally {
    fn see(&mut self, ok: Result<(), String>) {
        self.acknowledged += 1;
        match ok {
            Ok(()) => self.found += 1,
            Err(e) if self.missing.len() < 5 => self.missing.push(e),
            Err(_) => {}
        }
    }

    pub fn line(&self, kind: &str) -> String {
        format!(
            "{kind}: acknowledged {}, found {}, duplicated {}",
            self.acknowledged, self.found, self.duplicated
        )
    }

    pub fn ok(&self) -> bool {
        self.found == self.acknowledged && self.duplicated == 0
    }
}

#[derive(Default, Debug)]
pub struct Report {
    pub certificates: Tally,
    pub revocations: Tally,
    pub accounts: Tally,
    pub orders: Tally,
    /// Acknowledged orders that had reached `valid`.
    pub valid_orders: usize,
    /// Records in the log (its head).
    pub records: u64,
}

/// What the log itself holds, read back over WatchEvents from record 0.
#[derive(Default)]
struct LogFacts {
    issued: HashMap<String, usize>,
    revoked: HashMap<String, usize>,
    accounts: HashMap<String, usize>,
    orders: HashMap<String, usize>,
    finalized: HashMap<String, usize>,
}

fn count(m: &mut HashMap<String, usize>, k: String) {
    *m.entry(k).or_default() += 1;
}

fn dups(m: &HashMap<String, usize>) -> usize {
    m.values().filter(|&&n| n > 1).count()
}

/// Reads records `0..head`, checking they are contiguous and each names its predecessor's hash.
async fn read_log(c: &mut CertificateAuthorityClient<Channel>, head: u64) -> Result<LogFacts, String> {
    use event::Kind;
    let mut stream =
        c.watch_events(WatchEventsRequest { from_seq: 0 }).await.map_err(|e| e.to_string())?.into_inner();
    let mut f = LogFacts::default();
    let mut prev = vec![0u8; 32];
    for seq in 0..head {
        let rec =
            stream.message().await.map_err(|e| e.to_string())?.ok_or(format!("log ends before {seq}"))?;
        if rec.seq != seq || rec.prev_hash != prev {
            return Err(format!("record {} (expected {seq}) does not chain from its predecessor", rec.seq));
        }
        prev = rec.hash;
        match rec.event.and_then(|e| e.kind).ok_or(format!("record {seq} has no event"))? {
            Kind::CertificateIssued(i) => count(&mut f.issued, hex::encode(i.serial)),
            Kind::CertificateRevoked(r) => count(&mut f.revoked, hex::encode(r.serial)),
            Kind::AccountRegistered(a) => count(&mut f.accounts, a.account_id),
            Kind::OrderCreated(o) => count(&mut f.orders, o.order_id),
            Kind::OrderFinalized(o) => count(&mut f.finalized, o.order_id),
            Kind::CaInitialized(_)
            | Kind::CrlPublished(_)
            | Kind::AccountKeyChanged(_)
            | Kind::AccountDeactivated(_)
            | Kind::AuthorizationValidated(_)
            | Kind::AuthorizationInvalidated(_)
            | Kind::AccountUpdated(_)
            | Kind::ChallengeStarted(_)
            | Kind::AuthorizationDeactivated(_)
            | Kind::EabKeyCreated(_)
            | Kind::EabKeyRevoked(_)
            | Kind::RenewalWindowSet(_)
            | Kind::IssuingCaRotated(_)
            | Kind::AccessDenials(_) => {}
        }
    }
    Ok(f)
}

/// The serials the current full CRL lists, after `openssl crl` verified its signature.
fn crl_serials(env: &AcmeEnv, work: &Path) -> Result<HashSet<String>, String> {
    use x509_parser::prelude::FromDer;
    let (st, der) = env.server.http_get("/crl");
    if st != 200 {
        return Err(format!("GET /crl: {st}"));
    }
    let file = work.join("campaign-crl.der");
    std::fs::write(&file, &der).map_err(|e| e.to_string())?;
    let chain = env.server.dir.join("chain.pem");
    let (ok, out) = openssl(
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            &file.display().to_string(),
            "-CAfile",
            &chain.display().to_string(),
            "-noout",
        ],
        work,
    );
    if !ok || !out.contains("verify OK") {
        return Err(format!("openssl crl: {out}"));
    }
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
        .map_err(|e| format!("parse CRL: {e}"))?;
    Ok(crl.iter_revoked_certificates().map(|r| hex::encode(r.raw_serial())).collect())
}

/// `openssl ocsp` for `serials` (one request); each must come back `revoked`, signed by a
/// responder the chain vouches for.
fn ocsp_revoked(env: &AcmeEnv, work: &Path, serials: &[&String]) -> Result<(), String> {
    if serials.is_empty() {
        return Ok(());
    }
    let issuer = env.server.dir.join("intermediate.pem").display().to_string();
    let chain = env.server.dir.join("chain.pem").display().to_string();
    let url = format!("http://{}/ocsp", env.server.http);
    let mut args =
        vec!["ocsp".to_string(), "-issuer".into(), issuer, "-url".into(), url, "-CAfile".into(), chain];
    for s in serials {
        args.extend(["-serial".to_string(), format!("0x{s}")]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = openssl(&argv, work);
    let revoked = out.matches(": revoked").count();
    if ok && out.contains("Response verify OK") && revoked == serials.len() {
        Ok(())
    } else {
        Err(format!("openssl ocsp for {} serials ({revoked} revoked): {out}", serials.len()))
    }
}

/// Every check of the campaign against the running server. `pick` chooses which revoked
/// serials go to OCSP (a seeded sample).
pub async fn check(
    env: &AcmeEnv,
    l: &Ledger,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Result<Report, String> {
    let mut r = Report::default();
    let work = env.dir.path();
    let mut c = env.server.client().await;
    r.records = next_seq(&env.server);
    let log = read_log(&mut c, r.records).await?;
    let listed = list_all(&mut c, 1000, 0).await;
    let mut in_listing: HashMap<String, usize> = HashMap::new();
    for i in &listed {
        count(&mut in_listing, i.serial.clone());
    }

    // Certificates: gRPC's and the ACME orders' that reached valid.
    let mut acked: Vec<&String> = l.certs.iter().collect();
    acked.extend(l.orders.iter().filter_map(|o| o.serial.as_ref()));
    let got = futures::stream::iter(acked.iter().map(|s| {
        let mut c = c.clone();
        async move { (s, c.get_certificate(GetCertificateRequest { serial: s.to_string() }).await) }
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    let mut infos = HashMap::new();
    for (s, res) in got {
        let ok = match res {
            Ok(resp) => match resp.into_inner().certificate {
                Some(info) if in_listing.contains_key(s.as_str()) && log.issued.contains_key(s.as_str()) => {
                    infos.insert(s.to_string(), info);
                    Ok(())
                }
                _ => Err(format!("{s}: not in the listing or the log")),
            },
            Err(e) => Err(format!("{s}: GetCertificate {e}")),
        };
        r.certificates.see(ok);
    }
    r.certificates.duplicated = dups(&in_listing).max(dups(&log.issued));
    if listed.len() != log.issued.len() {
        return Err(format!("ListCertificates has {} serials, the log {}", listed.len(), log.issued.len()));
    }

    // Revocations: GetCertificate, the CRL, and OCSP for a sample.
    let crl = crl_serials(env, work)?;
    for (s, reason) in &l.revoked {
        let ok = match infos.get(s) {
            Some(i) if i.status == CertificateStatus::Revoked as i32 && i.revocation_reason == *reason => {
                if crl.contains(s) {
                    Ok(())
                } else {
                    Err(format!("{s}: revoked but not on the CRL"))
                }
            }
            Some(i) => Err(format!(
                "{s}: status {} reason {}, expected revoked ({reason})",
                i.status, i.revocation_reason
            )),
            None => Err(format!("{s}: revoked certificate not found")),
        };
        r.revocations.see(ok);
    }
    r.revocations.duplicated = dups(&log.revoked);
    let mut sample: Vec<&String> = l.revoked.last().map(|(s, _)| s).into_iter().collect();
    for _ in 0..3.min(l.revoked.len()) {
        let s = &l.revoked[pick(l.revoked.len())].0;
        if !sample.contains(&s) {
            sample.push(s);
        }
    }
    ocsp_revoked(env, work, &sample)?;

    check_acme(env, l, &log, &mut r).await;
    Ok(r)
}

/// The last path segment of an ACME URL: the id the log records.
fn url_id(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_string()
}

/// Accounts: found by their key (newAccount with onlyReturnExisting). Orders: fetched by URL
/// with their account; a `valid` one is still valid and serves the same chain.
async fn check_acme(env: &AcmeEnv, l: &Ledger, log: &LogFacts, r: &mut Report) {
    let per_account = futures::stream::iter(l.accounts.iter().enumerate().map(|(idx, a)| async move {
        let orders: Vec<_> = l.orders.iter().filter(|o| o.account == idx).collect();
        let mut results = vec![];
        let found = account_by_key(env, a.creds.as_str()).await;
        let account_ok = match found {
            Ok(_) if !log.accounts.contains_key(&url_id(&a.url)) => {
                Err(format!("{}: no AccountRegistered in the log", a.url))
            }
            Ok(url) if url == a.url => Ok(()),
            Ok(url) => Err(format!("{}: the key now names {url}", a.url)),
            Err(e) => Err(format!("{}: {e}", a.url)),
        };
        let account = async {
            let creds: AccountCredentials = serde_json::from_str(&a.creds).map_err(|e| e.to_string())?;
            let b = Account::builder_with_root(env.root_pem()).map_err(|e| e.to_string())?;
            b.from_credentials(creds).await.map_err(|e| e.to_string())
        }
        .await;
        for o in orders {
            let ok = match &account {
                Ok(acc) => order_ok(acc, o).await,
                Err(e) => Err(format!("{}: log in: {e}", o.url)),
            };
            results.push(ok);
        }
        (account_ok, results)
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    for (account_ok, orders) in per_account {
        r.accounts.see(account_ok);
        for o in orders {
            r.orders.see(o);
        }
    }
    r.valid_orders = l.orders.iter().filter(|o| o.pem.is_some()).count();
    r.accounts.duplicated = dups(&log.accounts);
    // An order created twice, or finalized (issued for) twice, is a duplicate.
    r.orders.duplicated = dups(&log.orders) + dups(&log.finalized);
}

/// The account URL the server returns for this credential's key, or its problem.
async fn account_by_key(env: &AcmeEnv, creds: &str) -> Result<String, String> {
    let creds: AccountCredentials = serde_json::from_str(creds).map_err(|e| e.to_string())?;
    let pkcs8 = creds.private_key().clone_key();
    let key = Key::from_pkcs8_der(pkcs8.clone_key()).map_err(|e| e.to_string())?;
    let (found, _) = Account::builder_with_root(env.root_pem())
        .map_err(|e| e.to_string())?
        .from_key((key, PrivateKeyDer::Pkcs8(pkcs8)), env.directory())
        .await
        .map_err(|e| e.to_string())?;
    Ok(found.id().to_string())
}

async fn order_ok(account: &Account, o: &super::load::OrderRec) -> Result<(), String> {
    let mut order = account.order(o.url.clone()).await.map_err(|e| format!("{}: {e}", o.url))?;
    let Some(pem) = &o.pem else { return Ok(()) };
    let status = order.state().status;
    if status != OrderStatus::Valid {
        return Err(format!("{}: acknowledged valid, now {status:?}", o.url));
    }
    match order.certificate().await {
        Ok(Some(again)) if &again == pem => Ok(()),
        Ok(Some(_)) => Err(format!("{}: a different chain than the one downloaded", o.url)),
        Ok(None) => Err(format!("{}: valid without a certificate", o.url)),
        Err(e) => Err(format!("{}: download {e}", o.url)),
    }
}
