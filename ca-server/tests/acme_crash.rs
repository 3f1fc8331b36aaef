//! `kill -9` in the middle of ACME flows: after a restart the client continues where it
//! was, with nothing it was told about lost, and the log still verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use common::acme::{AcmeEnv, RETRY, openssl_verify};
use instant_acme::{Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus};

#[tokio::test]
async fn kill9_after_the_challenge_post_then_the_flow_completes() {
    let env = AcmeEnv::start("", &[]);
    let (account, creds) = env.account_with(None).await;
    // A fresh client after each restart (a pooled connection to the killed process is dead).
    let creds = serde_json::to_string(&creds).unwrap();
    let reconnect = |env: &AcmeEnv| {
        let b = Account::builder_with_root(env.root_pem()).unwrap();
        let c = serde_json::from_str(&creds).unwrap();
        async move { b.from_credentials(c).await.unwrap() }
    };
    let idents = [Identifier::Dns("crash.example.internal".into())];
    let mut order = account.new_order(&NewOrder::new(&idents)).await.unwrap();
    let order_url = order.url().to_string();
    {
        let mut authzs = order.authorizations();
        let mut a = authzs.next().await.unwrap().unwrap();
        assert_eq!(a.status, AuthorizationStatus::Pending);
        let mut ch = a.challenge(ChallengeType::Http01).unwrap();
        let ka = ch.key_authorization();
        env.chall.command("add-http01", serde_json::json!({"token": ch.token, "content": ka.as_str()}));
        // Acknowledged: the challenge is processing. The validation may or may not have
        // finished before the kill; either way the order must get to ready.
        ch.set_ready().await.unwrap();
    }

    let env = env.restart_after_kill(&[]);
    let account = reconnect(&env).await;
    let mut order = account.order(order_url.clone()).await.expect("the order survived");
    assert_eq!(
        order.poll_ready(&RETRY).await.unwrap(),
        OrderStatus::Ready,
        "validation resumed after restart"
    );
    order.finalize().await.unwrap();
    let pem = order.poll_certificate(&RETRY).await.unwrap();
    openssl_verify(&env.root_pem(), &pem, env.dir.path());

    // Once more, right after the certificate was handed out: it is still there.
    let env = env.restart_after_kill(&[]);
    let account = reconnect(&env).await;
    let mut order = account.order(order_url).await.expect("the order survived");
    assert_eq!(order.state().status, OrderStatus::Valid);
    let again = order.poll_certificate(&RETRY).await.unwrap();
    assert_eq!(again, pem, "the same certificate after a second kill -9");

    // Offline: the chain verifies with the ACME records in it, the projections rebuild,
    // and the log shows the flow.
    let AcmeEnv { server, dir: _tmp, chall: _chall } = env;
    let data = server.dir.clone();
    assert!(server.stop().success());
    let offline = |args: &[&str]| {
        let out =
            std::process::Command::new(common::BIN).args(args).arg("--data-dir").arg(&data).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    offline(&["audit", "verify"]);
    offline(&["audit", "rebuild"]);
    let events = offline(&["events"]);
    for kind in [
        "account_registered",
        "order_created",
        "challenge_started",
        "authorization_validated",
        "order_finalized",
    ] {
        assert!(events.contains(&format!("\"kind\":\"{kind}\"")), "{kind} missing from the log");
    }
}
