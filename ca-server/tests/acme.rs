//! The ACME frontend against instant-acme, an independent client, with
//! pebble-challtestsrv answering challenges. Every issued chain is checked with openssl.

mod common;

use std::net::IpAddr;

use common::acme::{AcmeEnv, openssl_verify};
use instant_acme::{ChallengeType, Identifier};

fn dns(n: &str) -> Identifier {
    Identifier::Dns(n.to_string())
}

fn ip(s: &str) -> Identifier {
    Identifier::Ip(s.parse::<IpAddr>().unwrap())
}

#[tokio::test]
async fn http01_for_a_name_and_ips_issues_a_chain_openssl_verifies() {
    let env = AcmeEnv::start("", &[]);
    let account = env.account().await;
    let (_, pem) =
        env.issue(&account, &[dns("http01.example.internal"), ip("127.0.0.1")], ChallengeType::Http01).await;
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "leaf + issuing CA");
    openssl_verify(&env.root_pem(), &pem, env.dir.path());
}
