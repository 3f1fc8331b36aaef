//! Every JWS rule and request-plumbing rule of the ACME frontend, with a hand-built client
//! (instant-acme will not send broken requests), plus revokeCert by the certificate's own
//! key and racing finalize requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use common::acme::{AcmeEnv, RETRY, leaf_der};
use common::raw_acme::{EcKey, Raw, b64, path_of};
use instant_acme::{ChallengeType, Identifier, NewOrder, OrderStatus};
use serde_json::json;

fn raw(env: &AcmeEnv) -> Raw {
    Raw::new(&env.server.acme, &env.root_pem())
}

#[tokio::test]
async fn nonces_links_and_content_types() {
    let env = AcmeEnv::start("", &[]);
    let r = raw(&env);
    let head = r.request("HEAD", "new-nonce", None, &[]).await;
    assert_eq!(head.status, 200);
    let get = r.request("GET", "new-nonce", None, &[]).await;
    assert_eq!(get.status, 204);
    for resp in [&head, &get] {
        let n = resp.header("replay-nonce").unwrap();
        assert!(!n.contains('=') && n.len() >= 22, "unpadded base64url: {n}");
        assert!(resp.head.contains(&format!("<{}>;rel=\"index\"", r.url("directory"))), "{}", resp.head);
    }
    let dir = r.request("GET", "directory", None, &[]).await;
    assert_eq!(dir.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(dir.json()["newOrder"], json!(r.url("new-order")));
    assert_eq!(dir.json()["meta"]["externalAccountRequired"], json!(false));
    // A GET on a POST resource: 405, still a problem document with a fresh nonce.
    let g = r.request("GET", "new-order", None, &[]).await;
    assert_eq!(g.status, 405);
    assert!(g.header("replay-nonce").is_some());
    // Wrong content type: 415.
    let key = EcKey::generate();
    let body = key.jws(
        &json!({"alg": "ES256", "nonce": r.nonce().await, "url": r.url("new-account"), "jwk": key.jwk()}),
        Some(&json!({})),
    );
    let w = r.request("POST", "new-account", Some("application/json"), &body).await;
    assert_eq!(w.status, 415);
    assert_eq!(w.header("content-type").as_deref(), Some("application/problem+json"));
}

#[tokio::test]
async fn every_jws_rule_has_its_problem() {
    let env = AcmeEnv::start("", &[]);
    let r = raw(&env);
    let key = EcKey::generate();
    let kid = r.new_account(&key).await;
    let url = r.url("new-order");
    let payload = json!({"identifiers": [{"type": "dns", "value": "jws.example.internal"}]});
    let signed = |protected: serde_json::Value| key.jws(&protected, Some(&payload));

    // A good request works.
    let ok = r.post(&key, Some(&kid), "new-order", Some(&payload)).await;
    assert_eq!(ok.status, 201, "{}", String::from_utf8_lossy(&ok.body));

    // Replayed nonce: badNonce (400, status in the body), with a fresh nonce to retry with.
    let nonce = r.nonce().await;
    let body = signed(json!({"alg": "ES256", "nonce": nonce, "url": url, "kid": kid}));
    assert_eq!(r.post_raw("new-order", &body).await.status, 201);
    let replay = r.post_raw("new-order", &body).await;
    assert_eq!((replay.status, replay.problem().as_str()), (400, "badNonce"));
    assert_eq!(replay.json()["status"], json!(400));
    assert!(replay.header("replay-nonce").is_some());
    // Missing nonce too.
    let b = signed(json!({"alg": "ES256", "url": url, "kid": kid}));
    assert_eq!(r.post_raw("new-order", &b).await.problem(), "badNonce");

    // A flipped signature bit.
    let mut v: serde_json::Value = serde_json::from_slice(&signed(
        json!({"alg": "ES256", "nonce": r.nonce().await, "url": url, "kid": kid}),
    ))
    .unwrap();
    let mut sig = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        v["signature"].as_str().unwrap(),
    )
    .unwrap();
    sig[5] ^= 1;
    v["signature"] = json!(b64(sig));
    assert_eq!(r.post_raw("new-order", v.to_string().as_bytes()).await.problem(), "malformed");

    // The url header must be the URL posted to.
    let b =
        signed(json!({"alg": "ES256", "nonce": r.nonce().await, "url": r.url("new-account"), "kid": kid}));
    assert_eq!(r.post_raw("new-order", &b).await.problem(), "unauthorized");

    // Unknown kid.
    let b = signed(json!({"alg": "ES256", "nonce": r.nonce().await, "url": url, "kid": r.url("acct/nope")}));
    assert_eq!(r.post_raw("new-order", &b).await.problem(), "accountDoesNotExist");

    // jwk and kid both, and jwk where a kid is required.
    let b =
        signed(json!({"alg": "ES256", "nonce": r.nonce().await, "url": url, "kid": kid, "jwk": key.jwk()}));
    assert_eq!(r.post_raw("new-order", &b).await.problem(), "malformed");
    let b = signed(json!({"alg": "ES256", "nonce": r.nonce().await, "url": url, "jwk": key.jwk()}));
    assert_eq!(r.post_raw("new-order", &b).await.problem(), "malformed");

    // Unsupported algorithms.
    for alg in ["none", "HS256", "PS256"] {
        let b = signed(json!({"alg": alg, "nonce": r.nonce().await, "url": url, "kid": kid}));
        let resp = r.post_raw("new-order", &b).await;
        assert_eq!(resp.problem(), "badSignatureAlgorithm", "{alg}");
        assert!(resp.json()["algorithms"].as_array().is_some_and(|a| a.contains(&json!("ES256"))));
    }

    // Garbage and oversized bodies.
    assert_eq!(r.post_raw("new-order", b"{not json").await.problem(), "malformed");
    let big = vec![b'a'; 70 * 1024];
    let resp = r.post_raw("new-order", &big).await;
    assert_eq!((resp.status, resp.problem().as_str()), (413, "malformed"), "{}", resp.head);
    let huge = vec![b'a'; 2 << 20];
    let resp = r.post_raw("new-order", &huge).await;
    assert_eq!((resp.status, resp.problem().as_str()), (413, "malformed"), "{}", resp.head);
    assert!(resp.header("replay-nonce").is_some());
    // The server still serves well-formed requests.
    assert_eq!(r.post(&key, Some(&kid), "new-order", Some(&payload)).await.status, 201);
}

#[tokio::test]
async fn revoke_cert_signed_by_the_certificate_key_and_racing_finalizes_issue_once() {
    let env = AcmeEnv::start("", &[]);
    let account = env.account().await;
    let idents = [Identifier::Dns("certkey.example.internal".into())];
    let mut order = account.new_order(&NewOrder::new(&idents)).await.unwrap();
    assert_eq!(env.authorize(&mut order, ChallengeType::Http01).await, OrderStatus::Ready);
    let key_pem = order.finalize().await.unwrap();
    let chain = order.poll_certificate(&RETRY).await.unwrap();
    let der = leaf_der(&chain);
    let key_der = pem::parse(key_pem).unwrap().contents().to_vec();

    let r = raw(&env);
    let cert_key = EcKey::from_pkcs8(&key_der);
    let stranger = EcKey::generate();
    let payload = json!({"certificate": b64(&der), "reason": 1});
    let denied = r.post(&stranger, None, "revoke-cert", Some(&payload)).await;
    assert_eq!((denied.status, denied.problem().as_str()), (403, "unauthorized"));
    let bad_reason =
        r.post(&cert_key, None, "revoke-cert", Some(&json!({"certificate": b64(&der), "reason": 7}))).await;
    assert_eq!(bad_reason.problem(), "badRevocationReason");
    let ok = r.post(&cert_key, None, "revoke-cert", Some(&payload)).await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let again = r.post(&cert_key, None, "revoke-cert", Some(&payload)).await;
    assert_eq!(again.problem(), "alreadyRevoked");
    let serial = {
        use x509_parser::prelude::FromDer;
        hex::encode(x509_parser::certificate::X509Certificate::from_der(&der).unwrap().1.raw_serial())
    };
    let mut c = env.server.client().await;
    let info = c
        .get_certificate(ca_proto::v1::GetCertificateRequest { serial: serial.clone() })
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    assert_eq!(info.status, ca_proto::v1::CertificateStatus::Revoked as i32);
    assert_eq!(info.revocation_reason, 1);

    // Racing finalizes of one ready order: exactly one certificate.
    let key = EcKey::generate();
    let kid = r.new_account(&key).await;
    let name = "race.example.internal";
    let created = r
        .post(&key, Some(&kid), "new-order", Some(&json!({"identifiers": [{"type": "dns", "value": name}]})))
        .await;
    let order = created.json();
    let authz_url = order["authorizations"][0].as_str().unwrap().to_string();
    let authz = r.post(&key, Some(&kid), &path_of(&authz_url), None).await.json();
    let ch = authz["challenges"].as_array().unwrap().iter().find(|c| c["type"] == "http-01").unwrap().clone();
    let token = ch["token"].as_str().unwrap();
    let thumb = thumbprint(&key);
    env.chall.command("add-http01", json!({"token": token, "content": format!("{token}.{thumb}")}));
    let started = r.post(&key, Some(&kid), &path_of(ch["url"].as_str().unwrap()), Some(&json!({}))).await;
    assert_eq!(started.status, 200);
    assert!(started.head.contains(&format!("<{authz_url}>;rel=\"up\"")), "{}", started.head);
    let order_path = path_of(created.header("location").as_deref().unwrap());
    for _ in 0..200 {
        if r.post(&key, Some(&kid), &order_path, None).await.json()["status"] == "ready" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let finalize = path_of(order["finalize"].as_str().unwrap());
    let csr = |k: &rcgen::KeyPair| {
        let p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        p.serialize_request(k).unwrap().der().to_vec()
    };
    let (k1, k2) = (rcgen::KeyPair::generate().unwrap(), rcgen::KeyPair::generate().unwrap());
    let (p1, p2) = (json!({"csr": b64(csr(&k1))}), json!({"csr": b64(csr(&k2))}));
    let (a, b) = tokio::join!(
        r.post(&key, Some(&kid), &finalize, Some(&p1)),
        r.post(&key, Some(&kid), &finalize, Some(&p2))
    );
    for resp in [&a, &b] {
        assert!(
            resp.status == 200 || resp.problem() == "orderNotReady",
            "{}",
            String::from_utf8_lossy(&resp.body)
        );
        assert_ne!(resp.json()["status"], "ready", "a finalized order is never shown ready");
    }
    let done = r.post(&key, Some(&kid), &order_path, None).await.json();
    assert_eq!(done["status"], "valid");
    let listed = c
        .list_certificates(ca_proto::v1::ListCertificatesRequest { page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let issued = listed.certificates.iter().filter(|c| c.names == [name]).count();
    assert_eq!(issued, 1, "racing finalizes issued {issued} certificates");
}

fn thumbprint(key: &EcKey) -> String {
    let j = key.jwk();
    let canon = format!(r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#, j["x"], j["y"]);
    b64(ring::digest::digest(&ring::digest::SHA256, canon.as_bytes()))
}

#[tokio::test]
async fn the_orders_list_pages_with_rel_next() {
    let env = AcmeEnv::start("", &[]);
    let r = raw(&env);
    let key = EcKey::generate();
    let kid = r.new_account(&key).await;
    let mut created = std::collections::BTreeSet::new();
    for i in 0..101 {
        let p = json!({"identifiers": [{"type": "dns", "value": format!("page-{i}.example.internal")}]});
        let resp = r.post(&key, Some(&kid), "new-order", Some(&p)).await;
        assert_eq!(resp.status, 201);
        created.insert(resp.header("location").unwrap());
    }
    let acct = r.post(&key, Some(&kid), &path_of(&kid), None).await.json();
    let first = r.post(&key, Some(&kid), &path_of(acct["orders"].as_str().unwrap()), None).await;
    let page1: Vec<String> = serde_json::from_value(first.json()["orders"].clone()).unwrap();
    assert_eq!(page1.len(), 100);
    let next = first
        .head
        .lines()
        .find_map(|l| {
            l.strip_prefix("link: <")
                .or_else(|| l.strip_prefix("Link: <"))
                .filter(|l| l.ends_with(">;rel=\"next\""))
        })
        .map(|l| l.trim_end_matches(">;rel=\"next\"").to_string())
        .expect("a rel=\"next\" link");
    let second = r.post(&key, Some(&kid), &path_of(&next), None).await;
    let page2: Vec<String> = serde_json::from_value(second.json()["orders"].clone()).unwrap();
    assert_eq!(page2.len(), 1);
    assert!(!second.head.contains("rel=\"next\""));
    let listed: std::collections::BTreeSet<String> = page1.into_iter().chain(page2).collect();
    assert_eq!(listed, created, "every order exactly once");
}
