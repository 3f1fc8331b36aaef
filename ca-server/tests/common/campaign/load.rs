//! The campaign's load: SignCsr, Revoke and whole ACME flows, each recording in the
//! [`Ledger`] only what the server acknowledged.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ca_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use ca_proto::v1::{RevocationReason, RevokeRequest, SignCsrRequest};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
};
use tonic::transport::Channel;

use crate::common::acme::RETRY;
use crate::common::http_request;

/// An ACME account whose creation was acknowledged.
pub struct AccountRec {
    /// The account URL (the JWS `kid`).
    pub url: String,
    /// `AccountCredentials` as JSON, to log in again after a restart.
    pub creds: String,
}

/// An ACME order whose creation was acknowledged.
pub struct OrderRec {
    /// Index into [`Ledger::accounts`].
    pub account: usize,
    pub url: String,
    /// Set once the certificate was downloaded: the order was `valid`.
    pub pem: Option<String>,
    /// The leaf's serial (lowercase hex), with `pem`.
    pub serial: Option<String>,
}

/// Everything a client was told succeeded, over the whole campaign.
#[derive(Default)]
pub struct Ledger {
    /// Serials of acknowledged SignCsr calls.
    pub certs: Vec<String>,
    /// The next index of `certs` the revoker takes (it revokes every third one).
    pub revoke_cursor: usize,
    /// Acknowledged revocations: serial and reason.
    pub revoked: Vec<(String, i32)>,
    pub accounts: Vec<AccountRec>,
    pub orders: Vec<OrderRec>,
    /// Failures a client saw while the server was still alive: each is a bug.
    pub early_errors: Vec<String>,
}

/// What the load tasks share: the ledger and "the kill was requested".
#[derive(Clone)]
pub struct Shared {
    pub ledger: Arc<Mutex<Ledger>>,
    pub killed: Arc<AtomicBool>,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A failed call ends the task; before the kill it is also a finding.
    fn failed(&self, what: &str, err: impl std::fmt::Display) {
        if !self.killed.load(Ordering::SeqCst) {
            self.lock().early_errors.push(format!("{what}: {err}"));
        }
    }
}

/// SignCsr in a closed loop, from `csrs[start..]` round robin.
pub async fn signer(
    mut c: CertificateAuthorityClient<Channel>,
    csrs: Arc<Vec<Vec<u8>>>,
    start: usize,
    s: Shared,
) {
    let mut i = start;
    loop {
        let req =
            SignCsrRequest { csr: csrs[i % csrs.len()].clone(), profile: String::new(), validity_seconds: 0 };
        match c.sign_csr(req).await {
            Ok(r) => s.lock().certs.push(r.into_inner().serial),
            Err(e) => return s.failed("SignCsr", e),
        }
        i += 1;
    }
}

const REASONS: [RevocationReason; 4] = [
    RevocationReason::KeyCompromise,
    RevocationReason::Superseded,
    RevocationReason::CessationOfOperation,
    RevocationReason::AffiliationChanged,
];

/// Revokes every third acknowledged certificate (of this round or an earlier one), each once:
/// one whose Revoke was cut off by the kill is never retried, its outcome is unknown.
pub async fn revoker(mut c: CertificateAuthorityClient<Channel>, s: Shared) {
    let mut n = 0usize;
    loop {
        let next = {
            let mut l = s.lock();
            let i = l.revoke_cursor;
            (i < l.certs.len()).then(|| {
                l.revoke_cursor += 3;
                l.certs[i].clone()
            })
        };
        let Some(serial) = next else {
            if s.killed.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let reason = REASONS[n % REASONS.len()] as i32;
        n += 1;
        match c.revoke(RevokeRequest { serial: serial.clone(), reason, invalidity_date_unix: 0 }).await {
            Ok(_) => s.lock().revoked.push((serial, reason)),
            Err(e) => return s.failed(&format!("Revoke {serial}"), e),
        }
    }
}

/// Where an ACME worker talks to: the directory, the root to trust, challtestsrv's API.
#[derive(Clone)]
pub struct AcmeTarget {
    pub directory: String,
    pub root: PathBuf,
    pub chall_management: u16,
}

/// A new account, then orders one after another until the server goes away: each
/// authorized by http-01 or dns-01 (alternating from `first_dns`), finalized, downloaded.
pub async fn acme_worker(t: AcmeTarget, tag: String, first_dns: bool, s: Shared) {
    let created = async {
        Account::builder_with_root(&t.root)?
            .create(
                &NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false },
                t.directory.clone(),
                None,
            )
            .await
    };
    let (account, creds) = match created.await {
        Ok(a) => a,
        Err(e) => return s.failed("ACME new account", e),
    };
    let creds = match serde_json::to_string(&creds) {
        Ok(c) => c,
        Err(e) => return s.failed("serialize ACME credentials", e),
    };
    let account_idx = {
        let mut l = s.lock();
        l.accounts.push(AccountRec { url: account.id().to_string(), creds });
        l.accounts.len() - 1
    };
    for n in 0.. {
        if s.killed.load(Ordering::SeqCst) {
            return;
        }
        let kind = if (n % 2 == 0) == first_dns { ChallengeType::Dns01 } else { ChallengeType::Http01 };
        let name = format!("{tag}-{n}.campaign.example.internal");
        if let Err(e) = acme_order(&t, &account, account_idx, &name, kind.clone(), &s).await {
            return s.failed(&format!("ACME order for {name} ({kind:?})"), e);
        }
    }
}

async fn acme_order(
    t: &AcmeTarget,
    account: &Account,
    account_idx: usize,
    name: &str,
    kind: ChallengeType,
    s: &Shared,
) -> Result<(), String> {
    let idents = [Identifier::Dns(name.to_string())];
    let mut order = account.new_order(&NewOrder::new(&idents)).await.map_err(|e| e.to_string())?;
    let order_idx = {
        let mut l = s.lock();
        l.orders.push(OrderRec {
            account: account_idx,
            url: order.url().to_string(),
            pem: None,
            serial: None,
        });
        l.orders.len() - 1
    };
    {
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a.map_err(|e| e.to_string())?;
            if a.status != AuthorizationStatus::Pending {
                continue;
            }
            let mut ch = a.challenge(kind.clone()).ok_or("challenge not offered")?;
            let ka = ch.key_authorization();
            let (path, body) = if kind == ChallengeType::Dns01 {
                let host = format!("_acme-challenge.{name}.");
                ("set-txt", serde_json::json!({"host": host, "value": ka.dns_value()}))
            } else {
                ("add-http01", serde_json::json!({"token": ch.token, "content": ka.as_str()}))
            };
            chall_command(t.chall_management, path, &body)?;
            ch.set_ready().await.map_err(|e| e.to_string())?;
        }
    }
    let status = order.poll_ready(&RETRY).await.map_err(|e| e.to_string())?;
    if status != OrderStatus::Ready {
        return Err(format!("order {status:?}, not ready"));
    }
    order.finalize().await.map_err(|e| e.to_string())?;
    let pem = order.poll_certificate(&RETRY).await.map_err(|e| e.to_string())?;
    let serial = leaf_serial(&pem)?;
    let mut l = s.lock();
    l.orders[order_idx].pem = Some(pem);
    l.orders[order_idx].serial = Some(serial);
    Ok(())
}

/// The serial of a PEM chain's leaf, as the gRPC API spells it.
pub fn leaf_serial(pem: &str) -> Result<String, String> {
    use x509_parser::prelude::FromDer;
    let chain = pem::parse_many(pem).map_err(|e| e.to_string())?;
    let leaf = chain.first().ok_or("empty chain")?;
    let (_, cert) =
        x509_parser::certificate::X509Certificate::from_der(leaf.contents()).map_err(|e| e.to_string())?;
    Ok(hex::encode(cert.raw_serial()))
}

/// A challtestsrv management call (ChallSrv::command, from a task that cannot borrow it).
fn chall_command(port: u16, path: &str, body: &serde_json::Value) -> Result<(), String> {
    let addr = format!("127.0.0.1:{port}");
    let body = body.to_string();
    let (status, _, resp) = http_request(
        &addr,
        "POST",
        &format!("/{path}"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    if status == 200 {
        Ok(())
    } else {
        Err(format!("challtestsrv {path}: {status} {}", String::from_utf8_lossy(&resp)))
    }
}
