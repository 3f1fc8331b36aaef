//! ACME orders in the failover load: callers (instant-acme, http-01 answered by
//! pebble-challtestsrv) run whole orders (new order, challenge, finalize, download) at
//! whichever instance writes, and move to the other instance on a 503, a broken
//! connection or no answer. Each downloaded certificate joins the ledger, so the same loss
//! checks cover it; each finished order is looked up again on the instance that writes
//! after every fault: still `valid`, with the same certificate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};

use super::{Issued, Nodes, SharedLedger, sha256};
use crate::common::acme::{ChallSrv, leaf_der};

/// A whole order gets this long; past it the outcome is unknown (a paused instance).
const ORDER_TIMEOUT: Duration = Duration::from_secs(8);
const POLL: RetryPolicy =
    RetryPolicy::new().initial_delay(Duration::from_millis(50)).timeout(Duration::from_secs(6));

/// A finished order: its URL's path (the same on every instance), its certificate and
/// the certificate's serial.
#[derive(Clone, Debug)]
pub struct AcmeOrder {
    pub path: String,
    pub pem: String,
    pub serial: String,
}

/// Why an order did not finish.
enum Failed {
    /// 503 (this instance does not write, or its store is unavailable).
    Unavailable,
    /// No HTTP answer (the instance was killed): outcome unknown.
    Dropped,
    /// Anything else: a bug.
    Other(String),
}

fn classify(e: instant_acme::Error) -> Failed {
    match e {
        instant_acme::Error::Api(p) if p.status == Some(503) => Failed::Unavailable,
        instant_acme::Error::Api(p) => Failed::Other(format!("{p:?}")),
        instant_acme::Error::Http(_) | instant_acme::Error::Hyper(_) | instant_acme::Error::Other(_) => {
            Failed::Dropped
        }
        other => Failed::Other(other.to_string()),
    }
}

/// The account's credentials as registered: `(the ACME address it was registered at,
/// the credentials' JSON)`.
pub type Registered = (String, String);

/// Register the account the callers share, at whichever slot takes it.
async fn register(nodes: &Nodes) -> Registered {
    let deadline = Instant::now() + Duration::from_secs(20);
    for slot in (0..nodes.slots()).cycle() {
        if let Some(acme) = nodes.acme(slot) {
            let new = NewAccount {
                contact: &["mailto:ops@example.internal"],
                terms_of_service_agreed: true,
                only_return_existing: false,
            };
            let dir = format!("https://{acme}/acme/directory");
            let builder = Account::builder_with_root(nodes.root()).unwrap();
            match builder.create(&new, dir, None).await {
                Ok((_, creds)) => return (acme, serde_json::to_string(&creds).unwrap()),
                Err(e) => assert!(Instant::now() < deadline, "no instance registers an ACME account: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!("cycle() never ends")
}

/// The shared account, reached through each slot's listener.
struct Accounts {
    nodes: Nodes,
    registered: Registered,
    cache: Vec<Option<(String, Account)>>,
}

impl Accounts {
    fn new(nodes: &Nodes, registered: &Registered) -> Accounts {
        Accounts { nodes: nodes.clone(), registered: registered.clone(), cache: vec![None; nodes.slots()] }
    }

    async fn at(&mut self, slot: usize) -> Result<Option<Account>, Failed> {
        let Some(acme) = self.nodes.acme(slot) else { return Ok(None) };
        if let Some((a, account)) = &self.cache[slot]
            && *a == acme
        {
            return Ok(Some(account.clone()));
        }
        // The same account through another listener: its URLs name this one.
        let (from, json) = &self.registered;
        let creds: AccountCredentials = serde_json::from_str(&json.replace(from.as_str(), &acme)).unwrap();
        let builder = Account::builder_with_root(self.nodes.root()).map_err(classify)?;
        let account = builder.from_credentials(creds).await.map_err(classify)?;
        self.cache[slot] = Some((acme, account.clone()));
        Ok(Some(account))
    }
}

/// One order for `name`, start to certificate: `(order URL, PEM chain)`.
async fn order(account: &Account, chall: &ChallSrv, name: &str) -> Result<(String, String), Failed> {
    let ids = [Identifier::Dns(name.to_string())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.map_err(classify)?;
    let mut authzs = order.authorizations();
    while let Some(a) = authzs.next().await {
        let mut a = a.map_err(classify)?;
        if a.status != AuthorizationStatus::Pending {
            continue;
        }
        let mut ch = a
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| Failed::Other(format!("no http-01 challenge for {name}")))?;
        let body = serde_json::json!({"token": ch.token, "content": ch.key_authorization().as_str()});
        tokio::task::block_in_place(|| chall.command("add-http01", body));
        ch.set_ready().await.map_err(classify)?;
    }
    match order.poll_ready(&POLL).await.map_err(classify)? {
        OrderStatus::Ready => {}
        other => return Err(Failed::Other(format!("order for {name} is {other:?}, not ready"))),
    }
    order.finalize().await.map_err(classify)?;
    let pem = order.poll_certificate(&POLL).await.map_err(classify)?;
    Ok((order.url().to_string(), pem))
}

/// ACME callers running orders until stopped.
pub struct AcmeLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl AcmeLoad {
    /// `callers` callers starting at `slot`, sharing one account (the ledger's, registered
    /// now if it has none).
    pub async fn start(
        nodes: &Nodes,
        chall: &Arc<ChallSrv>,
        ledger: &SharedLedger,
        slot: usize,
        callers: usize,
        tag: &str,
    ) -> AcmeLoad {
        let known = ledger.lock().unwrap().acme_account.clone();
        let registered = match known {
            Some(r) => r,
            None => {
                let r = register(nodes).await;
                ledger.lock().unwrap().acme_account = Some(r.clone());
                r
            }
        };
        let stop = Arc::<AtomicBool>::default();
        let tasks = (0..callers)
            .map(|c| {
                let accounts = Accounts::new(nodes, &registered);
                let name = format!("{tag}{c}");
                tokio::spawn(caller(accounts, chall.clone(), ledger.clone(), stop.clone(), slot, name))
            })
            .collect();
        AcmeLoad { stop, tasks }
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

async fn caller(
    mut accounts: Accounts,
    chall: Arc<ChallSrv>,
    ledger: SharedLedger,
    stop: Arc<AtomicBool>,
    mut slot: usize,
    name: String,
) {
    let slots = accounts.cache.len();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let sent = Instant::now();
        let attempt = async {
            let Some(account) = accounts.at(slot).await? else { return Ok(None) };
            order(&account, &chall, &format!("acme-{name}-{i}.example.internal")).await.map(Some)
        };
        let outcome = tokio::time::timeout(ORDER_TIMEOUT, attempt).await;
        let finished = {
            let mut l = ledger.lock().unwrap();
            match outcome {
                Ok(Ok(Some((url, pem)))) => {
                    let der = leaf_der(&pem);
                    let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
                    let serial = ca_core::Serial::from_bytes(x.raw_serial()).unwrap().to_hex();
                    let path = url.split_once("/acme/").map(|(_, p)| format!("/acme/{p}")).unwrap();
                    l.acme_orders.push(AcmeOrder { path, pem, serial: serial.clone() });
                    l.certs.push(Issued {
                        serial,
                        der_sha256: sha256(&der),
                        slot,
                        sent,
                        acked: Instant::now(),
                    });
                    true
                }
                // No instance in this slot now.
                Ok(Ok(None)) => false,
                Ok(Err(Failed::Unavailable)) => {
                    l.unavailable += 1;
                    false
                }
                Ok(Err(Failed::Dropped)) => {
                    l.dropped += 1;
                    false
                }
                Ok(Err(Failed::Other(e))) => {
                    l.errors.push(format!("ACME {name} at slot {slot}: {e}"));
                    false
                }
                Err(_) => {
                    l.timeouts += 1;
                    false
                }
            }
        };
        if !finished {
            slot = (slot + 1) % slots;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The ledger's finished orders that the instance in `slot` does not serve as `valid`
/// with the same certificate, one line each.
pub async fn acme_losses(nodes: &Nodes, slot: usize, ledger: &super::Ledger) -> Vec<String> {
    let Some(registered) = &ledger.acme_account else { return vec![] };
    let mut accounts = Accounts::new(nodes, registered);
    let account = match accounts.at(slot).await {
        Ok(Some(a)) => a,
        Ok(None) => return vec![format!("no instance in slot {slot}")],
        Err(_) => return vec![format!("the ACME account does not load at slot {slot}")],
    };
    let acme = nodes.acme(slot).unwrap();
    let mut lost = Vec::new();
    for o in &ledger.acme_orders {
        let url = format!("https://{acme}{}", o.path);
        let found = async {
            let mut order = account.order(url.clone()).await?;
            let state = order.refresh().await?.status;
            Ok::<_, instant_acme::Error>((state, order.certificate().await?))
        };
        match found.await {
            Ok((OrderStatus::Valid, Some(pem))) if pem == o.pem => {}
            Ok((status, pem)) => lost.push(format!(
                "order {} is {status:?}{}",
                o.path,
                if pem.as_deref() == Some(o.pem.as_str()) { "" } else { " with another certificate" }
            )),
            Err(e) => lost.push(format!("order {}: {e}", o.path)),
        }
    }
    lost
}
