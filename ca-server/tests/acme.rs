//! The ACME frontend against instant-acme, an independent client, with
//! pebble-challtestsrv answering challenges. Every issued chain is checked with openssl.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::acme::{AcmeEnv, RETRY, acme_cli, eab_add, leaf_der, openssl_verify, problem_type};
use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, ExternalAccountKey, Identifier, Key,
    NewAccount, NewOrder, OrderStatus, RevocationReason, RevocationRequest,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn dns(n: &str) -> Identifier {
    Identifier::Dns(n.to_string())
}

fn ip(s: &str) -> Identifier {
    Identifier::Ip(s.parse::<IpAddr>().unwrap())
}

#[tokio::test]
async fn http01_for_names_and_an_ip_issues_a_chain_openssl_verifies() {
    let env = AcmeEnv::start("", &[]);
    let account = env.account().await;
    // `localhost` is loopback without DNS (RFC 6761), validated with --acme-allow-loopback.
    let idents = [dns("http01.example.internal"), dns("localhost"), ip("127.0.0.1")];
    let (_, pem) = env.issue(&account, &idents, ChallengeType::Http01).await;
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "leaf + issuing CA");
    openssl_verify(&env.root_pem(), &pem, env.dir.path());
}

#[tokio::test]
async fn dns01_wildcard_and_tls_alpn01() {
    let env = AcmeEnv::start("[policy]\nallow_wildcard_names = true\n", &[]);
    let account = env.account().await;
    let (_, pem) = env
        .issue(
            &account,
            &[dns("*.wild.example.internal"), dns("wild.example.internal")],
            ChallengeType::Dns01,
        )
        .await;
    openssl_verify(&env.root_pem(), &pem, env.dir.path());
    // (IP identifiers over tls-alpn-01 are covered by the VA's own tests: this challtestsrv
    // keys its responses by SNI host name.)
    let (_, pem) = env.issue(&account, &[dns("alpn.example.internal")], ChallengeType::TlsAlpn01).await;
    openssl_verify(&env.root_pem(), &pem, env.dir.path());
}

#[tokio::test]
async fn a_wildcard_offers_only_dns01_and_a_refused_name_is_a_rejected_identifier_with_subproblems() {
    let env = AcmeEnv::start("[policy]\nallow_wildcard_names = true\n", &[]);
    let account = env.account().await;
    let idents = [dns("*.only-dns.example.internal")];
    let mut order = account.new_order(&NewOrder::new(&idents)).await.unwrap();
    let mut authzs = order.authorizations();
    let a = authzs.next().await.unwrap().unwrap();
    let offered: Vec<ChallengeType> = a.challenges.iter().map(|c| c.r#type.clone()).collect();
    assert_eq!(offered, vec![ChallengeType::Dns01], "a wildcard is validated by dns-01 only");
    assert!(a.wildcard);

    let idents = [dns("ok.example.internal"), dns("evil.example.com.attacker.net"), ip("8.8.8.8")];
    let err = account.new_order(&NewOrder::new(&idents)).await.err().expect("refused");
    assert_eq!(problem_type(&err), "rejectedIdentifier");
    let instant_acme::Error::Api(p) = &err else { unreachable!() };
    assert_eq!(p.subproblems.len(), 2, "one subproblem per refused identifier: {p:?}");
}

#[tokio::test]
async fn eab_required_then_a_keys_own_policy_refuses_another_teams_name() {
    let env = AcmeEnv::start("[acme]\neab_required = true\n", &[]);
    let err = Account::builder_with_root(env.root_pem())
        .unwrap()
        .create(
            &NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false },
            env.directory(),
            None,
        )
        .await
        .err()
        .expect("refused");
    assert_eq!(problem_type(&err), "externalAccountRequired");

    let (kid, key) = eab_add(&env, &["--name", "team-a", "--allowed-dns", ".team-a.internal"]);
    let listed = acme_cli(&env, &["eab", "list"]);
    assert!(listed.contains(&kid) && listed.contains("team-a") && !listed.contains("hmac"), "{listed}");
    let eab = ExternalAccountKey::new(kid.clone(), &key);
    let (account, _) = env.account_with(Some(&eab)).await;
    let (_, pem) = env.issue(&account, &[dns("svc.team-a.internal")], ChallengeType::Http01).await;
    openssl_verify(&env.root_pem(), &pem, env.dir.path());
    let err = account.new_order(&NewOrder::new(&[dns("svc.team-b.internal")])).await.err().expect("refused");
    assert_eq!(problem_type(&err), "rejectedIdentifier", "{err}");

    // A wrong HMAC key and a revoked key are refused.
    let bad = ExternalAccountKey::new(kid.clone(), b"not the key at all, 32 bytes....");
    let err = Account::builder_with_root(env.root_pem())
        .unwrap()
        .create(
            &NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false },
            env.directory(),
            Some(&bad),
        )
        .await
        .err()
        .expect("refused");
    assert_eq!(problem_type(&err), "unauthorized", "{err}");
    acme_cli(&env, &["eab", "revoke", &kid]);
    let err = Account::builder_with_root(env.root_pem())
        .unwrap()
        .create(
            &NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false },
            env.directory(),
            Some(&eab),
        )
        .await
        .err()
        .expect("refused");
    assert_eq!(problem_type(&err), "unauthorized", "{err}");
}

#[tokio::test]
async fn valid_authorizations_are_reused_for_the_same_account() {
    let env = AcmeEnv::start("", &[]);
    let account = env.account().await;
    env.issue(&account, &[dns("reuse.example.internal")], ChallengeType::Http01).await;
    let mut order = account.new_order(&NewOrder::new(&[dns("reuse.example.internal")])).await.unwrap();
    assert_eq!(order.state().status, OrderStatus::Ready, "the valid authorization is reused");
    order.finalize().await.unwrap();
    order.poll_certificate(&RETRY).await.unwrap();
    // Another account gets its own authorization.
    let other = env.account().await;
    let order = other.new_order(&NewOrder::new(&[dns("reuse.example.internal")])).await.unwrap();
    let (_, state) = order.into_parts();
    assert_eq!(state.status, OrderStatus::Pending);
}

#[tokio::test]
async fn ari_window_revocation_and_replaces() {
    let env = AcmeEnv::start("", &[]);
    let account = env.account().await;
    let idents = [dns("ari.example.internal")];
    let (_, pem) = env.issue(&account, &idents, ChallengeType::Http01).await;
    let leaf = CertificateDer::from(leaf_der(&pem));
    let id = CertificateIdentifier::try_from(&leaf).unwrap();
    let (info, retry) = account.renewal_info(&id).await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    assert!(info.suggested_window.start > now && info.suggested_window.end > info.suggested_window.start);
    assert!(retry > Duration::ZERO);

    account
        .revoke(&RevocationRequest { certificate: &leaf, reason: Some(RevocationReason::Superseded) })
        .await
        .unwrap();
    let err =
        account.revoke(&RevocationRequest { certificate: &leaf, reason: None }).await.expect_err("refused");
    assert_eq!(problem_type(&err), "alreadyRevoked");
    let (info, _) = account.renewal_info(&id).await.unwrap();
    assert!(info.suggested_window.start < now, "revoked: renew now");

    let mut order = account.new_order(&NewOrder::new(&idents).replaces(id.clone())).await.unwrap();
    assert_eq!(order.state().status, OrderStatus::Ready, "authorization reused");
    let err = account.new_order(&NewOrder::new(&idents).replaces(id.clone())).await.err().expect("refused");
    assert_eq!(problem_type(&err), "alreadyReplaced");
    order.finalize().await.unwrap();
    order.poll_certificate(&RETRY).await.unwrap();
}

#[tokio::test]
async fn operator_moves_the_renewal_window() {
    let env = AcmeEnv::start("", &[]);
    let account = env.account().await;
    let (_, pem) = env.issue(&account, &[dns("window.example.internal")], ChallengeType::Http01).await;
    let leaf = CertificateDer::from(leaf_der(&pem));
    let id = CertificateIdentifier::try_from(&leaf).unwrap();
    let serial = hex::encode(x509_serial(&leaf));
    acme_cli(
        &env,
        &[
            "renewal-window",
            "--serial",
            &serial,
            "--start",
            "2020-01-01T00:00:00Z",
            "--end",
            "2020-01-02T00:00:00Z",
        ],
    );
    let (info, _) = account.renewal_info(&id).await.unwrap();
    assert_eq!(info.suggested_window.start.unix_timestamp(), 1_577_836_800);
}

fn x509_serial(der: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
    c.raw_serial().to_vec()
}

#[tokio::test]
async fn profiles_are_listed_honoured_and_unknown_ones_refused() {
    let env = AcmeEnv::start("", &[]);
    let account = env.account().await;
    let names: Vec<String> = account.profiles().map(|p| p.name.to_string()).collect();
    assert!(names.contains(&"server".into()) && names.contains(&"client".into()), "{names:?}");
    let idents = [dns("profile.example.internal")];
    let mut order = account.new_order(&NewOrder::new(&idents).profile("client")).await.unwrap();
    assert_eq!(env.authorize(&mut order, ChallengeType::Http01).await, OrderStatus::Ready);
    order.finalize().await.unwrap();
    let pem = order.poll_certificate(&RETRY).await.unwrap();
    let text = openssl_text(&pem, env.dir.path());
    assert!(
        text.contains("TLS Web Client Authentication") && !text.contains("TLS Web Server Authentication"),
        "{text}"
    );
    let err =
        account.new_order(&NewOrder::new(&idents).profile("no-such-profile")).await.err().expect("refused");
    assert_eq!(problem_type(&err), "invalidProfile");
}

fn openssl_text(pem: &str, dir: &std::path::Path) -> String {
    let f = dir.join("text.pem");
    std::fs::write(&f, pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&f)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn deactivated_authorization_invalidates_the_order() {
    let env = AcmeEnv::start("", &[]);
    let account = env.account().await;
    let mut order = account.new_order(&NewOrder::new(&[dns("deact.example.internal")])).await.unwrap();
    {
        let mut authzs = order.authorizations();
        let mut a = authzs.next().await.unwrap().unwrap();
        let st = a.deactivate().await.unwrap();
        assert_eq!(st.status, AuthorizationStatus::Deactivated);
    }
    assert_eq!(order.refresh().await.unwrap().status, OrderStatus::Invalid);
}

#[tokio::test]
async fn account_contacts_key_change_lookup_and_deactivation() {
    let env = AcmeEnv::start("", &[]);
    let (_, pkcs8) = Key::generate_pkcs8().unwrap();
    let key = || (Key::from_pkcs8_der(pkcs8.clone_key()).unwrap(), PrivateKeyDer::Pkcs8(pkcs8.clone_key()));
    let builder = || Account::builder_with_root(env.root_pem()).unwrap();
    // No account for a fresh key.
    let err = builder().from_key(key(), env.directory()).await.err().unwrap();
    assert_eq!(problem_type(&err), "accountDoesNotExist");
    let (mut account, _) = builder().create_from_key(key(), env.directory()).await.unwrap();
    let id = account.id().to_string();
    // Lookup by key finds the same account.
    let (found, _) = builder().from_key(key(), env.directory()).await.unwrap();
    assert_eq!(found.id(), id);

    account.update_contacts(&["mailto:new@example.internal"]).await.unwrap();
    // keyChange: the new key works, the old one is refused.
    let _new_credentials = account.update_key().await.unwrap();
    account.new_order(&NewOrder::new(&[dns("rolled.example.internal")])).await.unwrap();
    let err =
        found.new_order(&NewOrder::new(&[dns("old-key.example.internal")])).await.err().expect("refused");
    assert!(["unauthorized", "malformed"].contains(&problem_type(&err).as_str()), "{err}");
    let err = builder().from_key(key(), env.directory()).await.err().unwrap();
    assert_eq!(problem_type(&err), "accountDoesNotExist", "the old key no longer names the account");

    let again = account.clone();
    account.deactivate().await.unwrap();
    let err = again.new_order(&NewOrder::new(&[dns("gone.example.internal")])).await.err().expect("refused");
    assert_eq!(problem_type(&err), "unauthorized");
}
