//! `ca-server client ...`: the gRPC API for people at a shell.

use std::path::Path;

use ca_core::event::RevocationReason;
use ca_proto::convert;
use ca_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use ca_proto::v1::*;
use serde_json::json;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::cli::{ClientCommand, ConnArgs};

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

/// A channel to the server: plaintext for an `http://` address, else TLS presenting the
/// client certificate (by default the data dir's admin credential).
pub async fn channel(conn: &ConnArgs) -> Result<Channel, BoxErr> {
    let endpoint =
        Endpoint::from_shared(conn.addr.clone()).map_err(|e| format!("bad --addr {:?}: {e}", conn.addr))?;
    if conn.addr.starts_with("http://") {
        return Ok(endpoint.connect().await?);
    }
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| {
            format!(
                "reading the {what} {}: {e} (use --data-dir, --cert/--key/--ca, or an http:// --addr for a server started with --insecure-grpc)",
                p.display()
            )
        })
    };
    let dir = &conn.data_dir;
    let cert = read(&conn.cert.clone().unwrap_or_else(|| dir.join("admin.pem")), "client certificate")?;
    let key = read(&conn.key.clone().unwrap_or_else(|| dir.join("admin.key")), "client key")?;
    let ca = read(&conn.ca.clone().unwrap_or_else(|| dir.join("root.pem")), "CA certificate")?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(conn.server_name.clone());
    Ok(endpoint
        .tls_config(tls)?
        .connect()
        .await
        .map_err(|e| format!("connecting to {}: {e:?}", conn.addr))?)
}

pub async fn run(conn: &ConnArgs, cmd: ClientCommand) -> Result<(), BoxErr> {
    let mut c = CertificateAuthorityClient::new(channel(conn).await?);
    match cmd {
        ClientCommand::Sign { csr, profile, validity, out } => {
            let csr = std::fs::read(&csr).map_err(|e| format!("reading {}: {e}", csr.display()))?;
            let r =
                c.sign_csr(SignCsrRequest { csr, profile, validity_seconds: validity }).await?.into_inner();
            match out {
                Some(p) => write_out(&p, &r.certificate_pem)?,
                None => print!("{}", r.certificate_pem),
            }
            eprintln!("serial {}", r.serial);
        }
        ClientCommand::Revoke { serial, reason } => {
            let reason = RevocationReason::parse(&reason)?;
            let r = c
                .revoke(RevokeRequest {
                    serial: serial.clone(),
                    reason: convert::reason_to_proto(reason) as i32,
                    invalidity_date_unix: 0,
                })
                .await?
                .into_inner();
            println!("revoked {serial} ({}) at {}", reason.name(), r.revoked_at_unix);
        }
        ClientCommand::Get { serial, pem } => {
            let info = c
                .get_certificate(GetCertificateRequest { serial })
                .await?
                .into_inner()
                .certificate
                .ok_or("empty response")?;
            if pem {
                print!("{}", ca_core::ca::der_to_pem(&info.certificate_der));
            } else {
                println!("{}", serde_json::to_string_pretty(&info_json(&info))?);
            }
        }
        ClientCommand::List { status, page_size } => {
            let status = match status.as_deref() {
                None | Some("all") => CertificateStatus::Unspecified,
                Some("valid") => CertificateStatus::Valid,
                Some("revoked") => CertificateStatus::Revoked,
                Some("expired") => CertificateStatus::Expired,
                Some(s) => {
                    return Err(format!("unknown status {s:?}; use valid, revoked, expired or all").into());
                }
            };
            let mut token = String::new();
            loop {
                let r = c
                    .list_certificates(ListCertificatesRequest {
                        page_size,
                        page_token: token.clone(),
                        status: status as i32,
                    })
                    .await?
                    .into_inner();
                for i in &r.certificates {
                    println!("{}", info_json(i));
                }
                if r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
        }
        ClientCommand::IssueCredential { name, spiffe_id, out_dir, validity } => {
            issue_credential(&mut c, &name, spiffe_id, &out_dir, validity).await?;
        }
        ClientCommand::Watch { from } => {
            let mut s = c.watch_events(WatchEventsRequest { from_seq: from }).await?.into_inner();
            while let Some(rec) = s.message().await? {
                let kind =
                    rec.event.as_ref().and_then(|e| e.kind.as_ref()).map(kind_name).unwrap_or("unknown");
                println!(
                    "{}",
                    json!({ "seq": rec.seq, "hash": hex::encode(&rec.hash), "recorded_at_micros": rec.recorded_at_unix_micros, "kind": kind })
                );
            }
        }
    }
    Ok(())
}

/// The DNS domain of credentials issued without `--spiffe-id`.
pub const CLIENT_DNS_SUFFIX: &str = "clients.ca-server.internal";

/// `client issue-credential`: key here, CSR signed with the `client` profile, files out.
async fn issue_credential(
    c: &mut CertificateAuthorityClient<Channel>,
    name: &str,
    spiffe_id: Option<String>,
    out_dir: &Path,
    validity: u64,
) -> Result<(), BoxErr> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(format!("--name {name:?}: use letters, digits and inner `-` (a DNS label)").into());
    }
    let identity = match spiffe_id {
        Some(u) if u.starts_with("spiffe://") => u,
        Some(u) => return Err(format!("--spiffe-id {u:?} must be a spiffe:// URI").into()),
        None => format!("{}.{CLIENT_DNS_SUFFIX}", name.to_ascii_lowercase()),
    };
    let (key, csr) = ca_core::csr::self_request(std::slice::from_ref(&identity))?;
    let r = c
        .sign_csr(SignCsrRequest {
            csr,
            profile: crate::credential::ADMIN_PROFILE.into(),
            validity_seconds: validity,
        })
        .await?
        .into_inner();
    std::fs::create_dir_all(out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let key_path = out_dir.join(format!("{name}.key"));
    let pem_path = out_dir.join(format!("{name}.pem"));
    crate::app::write_secret(&key_path, pem::encode(&pem::Pem::new("PRIVATE KEY", key)).as_bytes())?;
    write_out(&pem_path, &r.certificate_pem)?;
    println!(
        "{}",
        json!({ "identity": identity, "serial": r.serial, "cert": pem_path.display().to_string(), "key": key_path.display().to_string() })
    );
    Ok(())
}

/// `ca-server acme ...`.
pub async fn acme(conn: &ConnArgs, cmd: crate::cli::AcmeCommand) -> Result<(), BoxErr> {
    use crate::cli::{AcmeCommand, EabCommand};
    use ca_proto::v1::acme_admin_client::AcmeAdminClient;
    let mut c = AcmeAdminClient::new(channel(conn).await?);
    match cmd {
        AcmeCommand::Eab { command: EabCommand::Add { name, allowed_dns, allowed_ips, profiles } } => {
            let r = c
                .create_eab_key(CreateEabKeyRequest { name, allowed_dns, allowed_ips, profiles })
                .await?
                .into_inner();
            println!("{}", json!({ "kid": r.kid, "hmac_key": r.hmac_key }));
            eprintln!(
                "the HMAC key is shown only this once; give kid and hmac_key to the ACME client's EAB settings"
            );
        }
        AcmeCommand::Eab { command: EabCommand::List } => {
            for k in c.list_eab_keys(ListEabKeysRequest {}).await?.into_inner().keys {
                println!(
                    "{}",
                    json!({
                        "kid": k.kid, "name": k.name, "allowed_dns": k.allowed_dns, "allowed_ips": k.allowed_ips,
                        "profiles": k.profiles, "created_at": k.created_at_unix, "revoked": k.revoked,
                    })
                );
            }
        }
        AcmeCommand::Eab { command: EabCommand::Revoke { kid } } => {
            c.revoke_eab_key(RevokeEabKeyRequest { kid: kid.clone() }).await?;
            println!("revoked EAB key {kid}");
        }
        AcmeCommand::RenewalWindow { serial, start, end } => {
            let (start_unix, end_unix) = (parse_when(&start)?, parse_when(&end)?);
            c.set_renewal_window(SetRenewalWindowRequest { serial: serial.clone(), start_unix, end_unix })
                .await?;
            println!("renewal window of {serial} set to {start} .. {end}");
        }
    }
    Ok(())
}

/// `ca-server ca ...`: issuer rotation and the list of issuers.
pub async fn ca(conn: &ConnArgs, cmd: crate::cli::CaCommand) -> Result<(), BoxErr> {
    use crate::cli::CaCommand;
    use ca_proto::v1::ca_admin_client::CaAdminClient;
    let mut c = CaAdminClient::new(channel(conn).await?);
    match cmd {
        CaCommand::Rotate { csr_out: Some(out), .. } => {
            let r = c.create_issuer_csr(CreateIssuerCsrRequest {}).await?.into_inner();
            write_out(&out, &r.csr_pem)?;
            println!(
                "CSR for issuer generation {} written to {}; sign it with the root (CA:TRUE, pathlen:0, keyCertSign, cRLSign), then run `ca-server ca rotate --import-signed CERT`",
                r.generation,
                out.display()
            );
        }
        CaCommand::Rotate { import_signed: Some(cert), .. } => {
            let certificate = std::fs::read(&cert).map_err(|e| format!("reading {}: {e}", cert.display()))?;
            let r = c.import_issuer(ImportIssuerRequest { certificate }).await?.into_inner();
            println!("{}", issuer_json(r.issuer.as_ref().ok_or("empty response")?));
        }
        CaCommand::Rotate { .. } => {
            let r = c.rotate_issuer(RotateIssuerRequest {}).await?.into_inner();
            println!("{}", issuer_json(r.issuer.as_ref().ok_or("empty response")?));
        }
        CaCommand::Issuers => {
            for i in c.list_issuers(ListIssuersRequest {}).await?.into_inner().issuers {
                println!("{}", issuer_json(&i));
            }
        }
    }
    Ok(())
}

fn issuer_json(i: &IssuerInfo) -> serde_json::Value {
    json!({
        "generation": i.generation,
        "subject": i.subject,
        "not_before": i.not_before_unix,
        "not_after": i.not_after_unix,
        "current": i.current,
    })
}

/// RFC 3339 or unix seconds.
fn parse_when(s: &str) -> Result<i64, BoxErr> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{s:?} is neither RFC 3339 nor unix seconds: {e}"))?;
    Ok(t.unix_timestamp())
}

fn write_out(p: &Path, s: &str) -> Result<(), BoxErr> {
    std::fs::write(p, s).map_err(|e| format!("writing {}: {e}", p.display()).into())
}

fn info_json(i: &CertificateInfo) -> serde_json::Value {
    let status = CertificateStatus::try_from(i.status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
    let reason = RevocationReason::from_code(i.revocation_reason as u32).map(|r| r.name()).unwrap_or("?");
    json!({
        "serial": i.serial,
        "status": status.trim_start_matches("CERTIFICATE_STATUS_").to_ascii_lowercase(),
        "profile": i.profile,
        "names": i.names,
        "not_before": i.not_before_unix,
        "not_after": i.not_after_unix,
        "requester": i.requester,
        "issuer_generation": i.issuer_generation,
        "revoked_at": (i.revoked_at_unix != 0).then_some(i.revoked_at_unix),
        "revocation_reason": (i.revoked_at_unix != 0).then_some(reason),
    })
}

fn kind_name(k: &event::Kind) -> &'static str {
    match k {
        event::Kind::CaInitialized(_) => "ca_initialized",
        event::Kind::CertificateIssued(_) => "certificate_issued",
        event::Kind::CertificateRevoked(_) => "certificate_revoked",
        event::Kind::CrlPublished(_) => "crl_published",
        event::Kind::AccountRegistered(_) => "account_registered",
        event::Kind::AccountKeyChanged(_) => "account_key_changed",
        event::Kind::AccountDeactivated(_) => "account_deactivated",
        event::Kind::OrderCreated(_) => "order_created",
        event::Kind::AuthorizationValidated(_) => "authorization_validated",
        event::Kind::AuthorizationInvalidated(_) => "authorization_invalidated",
        event::Kind::OrderFinalized(_) => "order_finalized",
        event::Kind::AccountUpdated(_) => "account_updated",
        event::Kind::ChallengeStarted(_) => "challenge_started",
        event::Kind::AuthorizationDeactivated(_) => "authorization_deactivated",
        event::Kind::EabKeyCreated(_) => "eab_key_created",
        event::Kind::EabKeyRevoked(_) => "eab_key_revoked",
        event::Kind::RenewalWindowSet(_) => "renewal_window_set",
        event::Kind::IssuingCaRotated(_) => "issuing_ca_rotated",
        event::Kind::AccessDenials(_) => "access_denials",
    }
}
