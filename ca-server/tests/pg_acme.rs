//! ACME on two instances sharing PostgreSQL: an account and an order acknowledged by the
//! writer survive its `kill -9`; the instance that takes over knows the account, serves
//! the finished order and its certificate, and completes a new order for it. Before the
//! takeover the other instance refuses ACME state changes (it does not write).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;
#[path = "../../storage/tests/common/pg.rs"]
mod pg;

use std::time::{Duration, Instant};

use common::acme::{AcmeEnv, ChallSrv, openssl_verify, problem_type};
use common::*;
use instant_acme::{Account, AccountCredentials, ChallengeType, Identifier, NewOrder, OrderStatus};

/// The same account, reached through `to`'s ACME listener instead of `from`'s.
async fn moved(creds: &AccountCredentials, from: &Server, to: &Server) -> Account {
    let json = serde_json::to_string(creds).unwrap().replace(&from.acme, &to.acme);
    let creds: AccountCredentials = serde_json::from_str(&json).unwrap();
    Account::builder_with_root(to.dir.join("root.pem")).unwrap().from_credentials(creds).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn acme_state_acknowledged_by_the_writer_survives_its_kill9() {
    let db = pg::Pg::start();
    let url = db.database("ca");
    let chall = ChallSrv::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(&cfg, "[storage]\nlease_ttl_ms = 1000\n").unwrap();
    let mut args = chall.server_args();
    args.extend(["--storage-url".into(), url.clone(), "--config".into(), cfg.display().to_string()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = Server::start_with(&dir_a, &argv);
    copy_keys(&dir_a, &dir_b);
    let b = Server::start_with(&dir_b, &argv);
    let env = AcmeEnv { chall, server: a, dir: tmp };

    // The writer: an account and a finished order.
    let (account, creds) = env.account_with(None).await;
    let name = Identifier::Dns("first.example.internal".into());
    let (first, pem) = env.issue(&account, &[name], ChallengeType::Http01).await;
    let first_url = first.url().to_string();

    // The other instance knows the account but refuses a new order while it does not write.
    let on_b = moved(&creds, &env.server, &b).await;
    let second = [Identifier::Dns("second.example.internal".into())];
    let refused = on_b.new_order(&NewOrder::new(&second)).await.err().expect("a follower refuses new orders");
    eprintln!("a new order on the follower: {} ({refused})", problem_type(&refused));

    // kill -9 the writer; the other takes over and goes on with the same account.
    let AcmeEnv { chall, server: a, dir } = env;
    let a_acme = a.acme.clone();
    a.kill9();
    let killed = Instant::now();
    let mut order = loop {
        match on_b.new_order(&NewOrder::new(&second)).await {
            Ok(o) => break o,
            Err(e) => {
                assert!(killed.elapsed() < Duration::from_secs(15), "no takeover: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    eprintln!("new order accepted {} ms after the kill -9", killed.elapsed().as_millis());
    let lease = db.sql("ca", "SELECT epoch, holder FROM ca_lease WHERE id = 1");
    assert!(lease.split('|').next().unwrap().parse::<u64>().unwrap() >= 2, "a later epoch: {lease}");
    let env = AcmeEnv { chall, server: b, dir };
    assert_eq!(env.authorize(&mut order, ChallengeType::Http01).await, OrderStatus::Ready);
    order.finalize().await.unwrap();
    let pem2 = order.poll_certificate(&common::acme::RETRY).await.unwrap();
    openssl_verify(&env.root_pem(), &pem2, env.dir.path());

    // The order finished on the dead writer: valid, with the same certificate.
    let mut first = on_b.order(first_url.replace(&a_acme, &env.server.acme)).await.unwrap();
    assert_eq!(first.refresh().await.unwrap().status, OrderStatus::Valid);
    assert_eq!(first.certificate().await.unwrap().as_deref(), Some(pem.as_str()));
    let AcmeEnv { server: b, .. } = env;
    assert!(b.stop().success());
    let (ok, out) = run(std::process::Command::new(BIN).args(["audit", "verify", "--storage-url", &url]));
    assert!(ok && out.contains("ok: "), "audit verify: {out}");
}
