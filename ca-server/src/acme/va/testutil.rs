//! Test fixtures: a tiny authoritative UDP DNS server for one in-memory zone, and a validator
//! that may reach loopback.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

use super::{VaConfig, Validator};

/// Records by lower-case name without the trailing dot.
#[derive(Default, Clone)]
pub(crate) struct Zone {
    records: HashMap<String, Vec<RData>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn fqdn(name: &str) -> Name {
    Name::from_ascii(format!("{}.", key(name))).expect("test name")
}

impl Zone {
    pub(crate) fn txt(&mut self, name: &str, strings: Vec<String>) -> &mut Self {
        self.add(name, RData::TXT(TXT::new(strings)))
    }

    pub(crate) fn ip(&mut self, name: &str, ip: IpAddr) -> &mut Self {
        let rdata = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        self.add(name, rdata)
    }

    pub(crate) fn cname(&mut self, name: &str, target: &str) -> &mut Self {
        self.add(name, RData::CNAME(CNAME(fqdn(target))))
    }

    fn add(&mut self, name: &str, rdata: RData) -> &mut Self {
        self.records.entry(key(name)).or_default().push(rdata);
        self
    }

    /// Answer for one question: the CNAME chain (followed within the zone, at most 8 links)
    /// then the records of the asked type, or NXDOMAIN for a name the zone lacks.
    fn answer(&self, q_name: &str, q_type: RecordType) -> (ResponseCode, Vec<Record>) {
        let mut name = key(q_name);
        let mut out = Vec::new();
        for _ in 0..8 {
            let Some(rrs) = self.records.get(&name) else {
                let code = if out.is_empty() { ResponseCode::NXDomain } else { ResponseCode::NoError };
                return (code, out);
            };
            let cname = rrs.iter().find_map(|r| match r {
                RData::CNAME(c) if q_type != RecordType::CNAME => Some(c.0.clone()),
                _ => None,
            });
            if let Some(target) = cname {
                out.push(Record::from_rdata(fqdn(&name), 0, RData::CNAME(CNAME(target.clone()))));
                name = key(&target.to_ascii());
                continue;
            }
            for r in rrs.iter().filter(|r| r.record_type() == q_type) {
                out.push(Record::from_rdata(fqdn(&name), 0, r.clone()));
            }
            return (ResponseCode::NoError, out);
        }
        (ResponseCode::ServFail, Vec::new())
    }

    /// Serves the zone on a fresh 127.0.0.1 UDP port until the test's runtime ends.
    pub(crate) async fn serve(&self) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS");
        let addr = sock.local_addr().expect("DNS addr");
        let zone = Arc::new(self.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else { return };
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let mut resp = Message::new();
                resp.set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(query.op_code())
                    .set_authoritative(true)
                    .set_recursion_desired(query.recursion_desired())
                    .set_recursion_available(true);
                if let Some(q) = query.queries().first() {
                    let (code, answers) = zone.answer(&q.name().to_ascii(), q.query_type());
                    resp.add_query(q.clone());
                    resp.set_response_code(code);
                    resp.add_answers(answers);
                }
                if let Ok(bytes) = resp.to_vec() {
                    let _ = sock.send_to(&bytes, peer).await;
                }
            }
        });
        addr
    }
}

/// A validator with `allow_loopback` and a 3 s budget, adjusted by `f`.
pub(crate) fn validator(f: impl FnOnce(&mut VaConfig)) -> Validator {
    let mut cfg = VaConfig {
        allow_loopback: true,
        timeout: Duration::from_secs(3),
        // a resolver that is never asked unless a test sets its own: no /etc/resolv.conf needed
        dns_resolver: Some("127.0.0.1:9".parse().expect("addr")),
        ..VaConfig::default()
    };
    f(&mut cfg);
    Validator::new(cfg).expect("validator")
}
