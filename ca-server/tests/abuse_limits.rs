//! Abuse limits against the real server: `[acme.limits]` (new accounts per IP, new orders
//! per account and per IP, pending authorizations per account, failed validations per
//! identifier) answered with `rateLimited`, 429 and `Retry-After`; `[grpc]
//! max_issuance_per_minute` per identity answered with RESOURCE_EXHAUSTED and `retry-after`
//! metadata, while other identities still get certificates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ca_proto::v1::SignCsrRequest;
use ca_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use common::acme::{AcmeEnv, RETRY, problem_type};
use common::raw_acme::{EcKey, Raw, path_of};
use common::*;
use instant_acme::{AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus};
use serde_json::json;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Identity};

const ACME_LIMITS: &str = "[acme.limits]
new_accounts_per_ip_per_hour = 3
new_orders_per_account_per_hour = 4
new_orders_per_ip_per_hour = 7
pending_authorizations_per_account = 2
failed_validations_per_identifier_per_hour = 1
";

fn metrics(server: &Server) -> String {
    String::from_utf8(server.http_get("/metrics").1).unwrap()
}

/// The error of a request that must fail (instant-acme's values are not `Debug`).
fn refused<T>(r: Result<T, instant_acme::Error>, what: &str) -> instant_acme::Error {
    match r {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => e,
    }
}

/// An order whose http-01 answer was never published ends invalid (instant-acme reports
/// the authorization's error).
fn assert_invalid(r: Result<OrderStatus, instant_acme::Error>) {
    match r {
        Ok(s) => assert_eq!(s, OrderStatus::Invalid),
        Err(e) => assert_eq!(problem_type(&e), "incorrectResponse", "{e:?}"),
    }
}

fn api_detail(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => p.detail.clone().unwrap_or_default(),
        other => format!("not an ACME problem: {other}"),
    }
}

/// `Retry-After` of a raw response, in seconds.
fn retry_after(r: &common::raw_acme::Response) -> u64 {
    r.header("retry-after").expect("Retry-After header").parse().expect("Retry-After in seconds")
}

fn dns(names: &[&str]) -> serde_json::Value {
    json!({"identifiers": names.iter().map(|n| json!({"type": "dns", "value": n})).collect::<Vec<_>>()})
}

#[tokio::test(flavor = "multi_thread")]
async fn acme_limits_answer_rate_limited_with_retry_after() {
    let env = AcmeEnv::start(ACME_LIMITS, &[]);
    let raw = Raw::new(&env.server.acme, &env.root_pem());

    // New accounts per IP: three, then refused; an existing key is not a new account.
    let k1 = EcKey::generate();
    let kid1 = raw.new_account(&k1).await;
    let a2 = env.account().await;
    let _a3 = env.account().await;
    let again = raw.post(&k1, None, "new-account", Some(&json!({"termsOfServiceAgreed": true}))).await;
    assert_eq!(again.status, 200, "the existing account: {}", String::from_utf8_lossy(&again.body));
    let fourth = instant_acme::Account::builder_with_root(env.root_pem())
        .unwrap()
        .create(
            &instant_acme::NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            env.directory(),
            None,
        )
        .await;
    let err = refused(fourth, "a 4th account from one IP");
    assert_eq!(problem_type(&err), "rateLimited", "{err:?}");
    let r =
        raw.post(&EcKey::generate(), None, "new-account", Some(&json!({"termsOfServiceAgreed": true}))).await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.problem(), "rateLimited");
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("new_accounts_per_ip_per_hour = 3") && detail.contains("127.0.0.1"), "{detail}");
    // A burst of 3 per hour refills one every 20 minutes.
    assert!((1..=1200).contains(&retry_after(&r)), "{}", r.head);

    // Pending authorizations per account (cap 2), counted from what is pending now.
    let mut authzs = vec![];
    for name in ["p1.test", "p2.test"] {
        let r = raw.post(&k1, Some(&kid1), "new-order", Some(&dns(&[name]))).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        authzs.push(r.json()["authorizations"][0].as_str().unwrap().to_string());
    }
    let r = raw.post(&k1, Some(&kid1), "new-order", Some(&dns(&["p3.test"]))).await;
    assert_eq!(
        (r.status, r.problem().as_str()),
        (429, "rateLimited"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("pending_authorizations_per_account = 2") && detail.contains("2 pending"),
        "{detail}"
    );
    assert!(retry_after(&r) > 0);
    // Deactivating one frees its place (the cap re-reads the store at most once a second).
    let d = raw.post(&k1, Some(&kid1), &path_of(&authzs[0]), Some(&json!({"status": "deactivated"}))).await;
    assert_eq!(d.status, 200, "{}", String::from_utf8_lossy(&d.body));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = raw.post(&k1, Some(&kid1), "new-order", Some(&dns(&["p4.test"]))).await;
    assert_eq!(r.status, 201, "after a deactivation: {}", String::from_utf8_lossy(&r.body));

    // New orders per account: the 5th of the hour (the refused one above counted).
    let r = raw.post(&k1, Some(&kid1), "new-order", Some(&dns(&["p5.test"]))).await;
    assert_eq!(
        (r.status, r.problem().as_str()),
        (429, "rateLimited"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("new_orders_per_account_per_hour = 4") && detail.contains(&path_of(&kid1)[5..]),
        "{detail}"
    );
    assert!((1..=900).contains(&retry_after(&r)), "{}", r.head);

    // Failed validations per identifier: http-01 with no answer published fails...
    let id = [Identifier::Dns("fail.test".into())];
    let mut order = a2.new_order(&NewOrder::new(&id)).await.expect("first order for fail.test");
    {
        let mut authzs = order.authorizations();
        let mut a = authzs.next().await.unwrap().unwrap();
        assert_eq!(a.status, AuthorizationStatus::Pending);
        a.challenge(ChallengeType::Http01).unwrap().set_ready().await.unwrap();
    }
    assert_invalid(order.poll_ready(&RETRY).await);
    // ... and with one failure per hour allowed, the next attempt is refused.
    let err = refused(a2.new_order(&NewOrder::new(&id)).await, "a retry of fail.test");
    assert_eq!(problem_type(&err), "rateLimited", "{err:?}");
    let detail = api_detail(&err);
    assert!(
        detail.contains("fail.test") && detail.contains("failed_validations_per_identifier_per_hour = 1"),
        "{detail}"
    );
    // Other names are not affected.
    a2.new_order(&NewOrder::new(&[Identifier::Dns("ok.test".into())])).await.expect("another name");

    // New orders per IP (7): p1, p2, p3 (refused later, counted), p4, fail.test twice, ok.test.
    let ok2 = [Identifier::Dns("ok2.test".into())];
    let err = refused(a2.new_order(&NewOrder::new(&ok2)).await, "the 8th order from one IP");
    assert_eq!(problem_type(&err), "rateLimited", "{err:?}");
    assert!(api_detail(&err).contains("new_orders_per_ip_per_hour = 7"), "{}", api_detail(&err));

    let text = metrics(&env.server);
    for (limit, n) in [
        ("new_accounts_per_ip", 2),
        ("pending_authorizations_per_account", 1),
        ("new_orders_per_account", 1),
        ("failed_validations_per_identifier", 1),
        ("new_orders_per_ip", 1),
    ] {
        let line = format!("ca_acme_rate_limited_total{{limit=\"{limit}\"}} {n}\n");
        assert!(text.contains(&line), "{line} in {text}");
    }
    assert!(text.contains("ca_acme_ratelimit_tracked_keys{limit=\"new_accounts_per_ip\"} 1\n"), "{text}");
}

/// The failed-validation limit also holds at the challenge: a second pending authorization
/// for the same name cannot be tried once the first failure used the budget up.
#[tokio::test(flavor = "multi_thread")]
async fn failed_validations_block_further_challenges_for_the_name() {
    let env = AcmeEnv::start("[acme.limits]\nfailed_validations_per_identifier_per_hour = 1\n", &[]);
    let acct = env.account().await;
    let id = [Identifier::Dns("flaky.test".into())];
    let mut first = acct.new_order(&NewOrder::new(&id)).await.unwrap();
    let mut second = acct.new_order(&NewOrder::new(&id)).await.expect("both ordered before any failure");
    {
        let mut authzs = first.authorizations();
        let mut a = authzs.next().await.unwrap().unwrap();
        a.challenge(ChallengeType::Http01).unwrap().set_ready().await.unwrap();
    }
    assert_invalid(first.poll_ready(&RETRY).await);
    let mut authzs = second.authorizations();
    let mut a = authzs.next().await.unwrap().unwrap();
    let err =
        a.challenge(ChallengeType::Http01).unwrap().set_ready().await.expect_err("the budget is used up");
    assert_eq!(problem_type(&err), "rateLimited", "{err:?}");
}

/// `client issue-credential` as the admin; (NAME.pem, NAME.key) contents.
fn issue_credential(server: &Server, out: &Path, name: &str, spiffe: &str) -> (Vec<u8>, Vec<u8>) {
    let mut cmd = Command::new(BIN);
    cmd.arg("client")
        .args(server.cli_conn())
        .args(["issue-credential", "--name", name, "--spiffe-id", spiffe, "--out-dir"])
        .arg(out);
    let (ok, text) = run(&mut cmd);
    assert!(ok, "issue-credential: {text}");
    (
        std::fs::read(out.join(format!("{name}.pem"))).unwrap(),
        std::fs::read(out.join(format!("{name}.key"))).unwrap(),
    )
}

async fn client_as(server: &Server, (cert, key): (Vec<u8>, Vec<u8>)) -> CertificateAuthorityClient<Channel> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(server.dir.join("root.pem")).unwrap(),
        ))
        .identity(Identity::from_pem(cert, key))
        .domain_name("localhost");
    let ch =
        Endpoint::from_shared(server.grpc.clone()).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
    CertificateAuthorityClient::new(ch)
}

fn sign(name: &str) -> SignCsrRequest {
    SignCsrRequest { csr: csr_for(&[name]), profile: String::new(), validity_seconds: 0 }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_issuance_is_limited_per_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(
        &cfg,
        "[grpc]\nmax_issuance_per_minute = 3\n\n[[authz.rules]]\n\
         identity = \"spiffe://corp.internal/ns/batch/*\"\nmax_issuance_per_minute = 1\n",
    )
    .unwrap();
    let server = Server::start_with(&tmp.path().join("data"), &["--config", cfg.to_str().unwrap()]);
    let creds = tmp.path().join("creds");
    let one = "spiffe://corp.internal/ns/web/one";
    let mut w1 = client_as(&server, issue_credential(&server, &creds, "one", one)).await;
    let mut w2 =
        client_as(&server, issue_credential(&server, &creds, "two", "spiffe://corp.internal/ns/web/two"))
            .await;
    let batch = "spiffe://corp.internal/ns/batch/job";
    let mut w3 = client_as(&server, issue_credential(&server, &creds, "job", batch)).await;

    for _ in 0..3 {
        w1.sign_csr(sign("one.internal")).await.expect("within the limit");
    }
    let before = next_seq(&server);
    let err = w1.sign_csr(sign("one.internal")).await.expect_err("the 4th in a minute");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let m = err.message();
    assert!(
        m.contains(one) && m.contains("3 SignCsr per minute") && m.contains("[grpc] max_issuance_per_minute"),
        "{m}"
    );
    let secs: u64 =
        err.metadata().get("retry-after").expect("retry-after metadata").to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&secs), "a burst of 3 per minute refills one every 20 s: {secs}");
    assert_eq!(next_seq(&server), before, "a refusal appends nothing");

    // Another identity has its own bucket; a rule's own limit wins over [grpc]'s.
    w2.sign_csr(sign("two.internal")).await.expect("another identity");
    w3.sign_csr(sign("job.internal")).await.expect("the batch rule's one");
    let err = w3.sign_csr(sign("job.internal")).await.expect_err("the batch rule allows 1");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains(batch) && err.message().contains("rule 0"), "{}", err.message());
    // The admin is unlimited by default.
    let mut admin = server.client().await;
    for _ in 0..5 {
        admin.sign_csr(sign("admin-made.internal")).await.expect("admin");
    }

    let text = metrics(&server);
    assert!(text.contains("ca_grpc_rate_limited_total{method=\"SignCsr\"} 2\n"), "{text}");
    assert!(text.contains("ca_grpc_ratelimit_tracked_keys 3\n"), "{text}");
}

/// The pending cap is read from the log, so a restart does not reset it (the hourly buckets
/// do refill).
#[tokio::test(flavor = "multi_thread")]
async fn the_pending_cap_survives_a_restart() {
    let env = AcmeEnv::start("[acme.limits]\npending_authorizations_per_account = 1\n", &[]);
    let raw = Raw::new(&env.server.acme, &env.root_pem());
    let key = EcKey::generate();
    let kid = raw.new_account(&key).await;
    let r = raw.post(&key, Some(&kid), "new-order", Some(&dns(&["first.test"]))).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    let env = env.restart_after_kill(&[]);
    let raw = Raw::new(&env.server.acme, &env.root_pem());
    let r = raw.post(&key, Some(&kid), "new-order", Some(&dns(&["second.test"]))).await;
    assert_eq!(
        (r.status, r.problem().as_str()),
        (429, "rateLimited"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(
        r.json()["detail"].as_str().unwrap().contains("1 pending"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}
