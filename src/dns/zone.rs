//! The records the resolver serves, built from the store, and the answer to
//! one query: pure functions, tested without sockets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::model::{Container, Network};

/// Domains rete answers for with authority: its own, and Podman's, so
/// Podman's search domain works unchanged.
pub const DOMAINS: [&str; 2] = ["rete", "dns.podman"];

/// Answers change as containers come and go: keep caches short.
const TTL: u32 = 5;

/// The largest UDP reply to a query without EDNS (RFC 1035).
const UDP_PLAIN: u16 = 512;
/// The largest UDP reply rete offers EDNS clients: the size that avoids
/// fragmentation (DNS flag day 2020).
pub const UDP_EDNS: u16 = 1232;

/// Names and addresses per DNS-enabled network, and who is asking from where.
#[derive(Debug, Default)]
pub struct Zone {
    networks: HashMap<String, Records>,
    /// A container's address → the DNS-enabled networks it is on.
    askers: HashMap<IpAddr, Vec<String>>,
    /// Where to listen: each DNS-enabled network's gateway addresses.
    pub listen: Vec<(IpAddr, String)>,
}

#[derive(Debug, Default)]
struct Records {
    names: HashMap<String, Vec<IpAddr>>,
    reverse: HashMap<IpAddr, String>,
}

/// What to do with a query.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not rete's to answer: pass it to an upstream resolver.
    Forward,
    /// Not a DNS query worth answering.
    Drop,
}

impl Zone {
    pub fn build(networks: &[Network], containers: &[Container]) -> Zone {
        let mut zone = Zone::default();
        for n in networks.iter().filter(|n| n.dns) {
            zone.networks.insert(n.name.clone(), Records::default());
            for s in &n.subnets {
                zone.listen.push((s.gateway, n.name.clone()));
            }
        }
        for c in containers {
            // A container sees every network it is on, whichever of its
            // addresses it asks from.
            let own: Vec<String> = c
                .endpoints
                .iter()
                .filter(|e| zone.networks.contains_key(&e.network))
                .map(|e| e.network.clone())
                .collect();
            for ep in &c.endpoints {
                let Some(records) = zone.networks.get_mut(&ep.network) else {
                    continue;
                };
                let addrs: Vec<IpAddr> = ep.addresses.iter().map(|a| a.addr()).collect();
                let mut names = vec![c.name.to_lowercase()];
                if c.id.len() >= 12 {
                    names.push(c.id[..12].to_string());
                }
                names.extend(ep.aliases.iter().map(|a| a.to_lowercase()));
                for name in names {
                    records.names.entry(name).or_default().extend(&addrs);
                }
                for a in &addrs {
                    records.reverse.insert(*a, c.name.to_lowercase());
                    zone.askers.insert(*a, own.clone());
                }
            }
        }
        zone
    }

    /// The networks whose names `asker` may see: its own networks if it is
    /// a container rete knows, else the network whose gateway it asked.
    fn visible<'a>(&'a self, asker: IpAddr, via: &'a str) -> Vec<&'a Records> {
        match self.askers.get(&asker) {
            Some(nets) => nets.iter().filter_map(|n| self.networks.get(n)).collect(),
            None => self.networks.get(via).into_iter().collect(),
        }
    }

    fn lookup(&self, name: &str, asker: IpAddr, via: &str) -> Option<Vec<IpAddr>> {
        let mut found: Option<Vec<IpAddr>> = None;
        for r in self.visible(asker, via) {
            if let Some(a) = r.names.get(name) {
                found.get_or_insert_with(Vec::new).extend(a);
            }
        }
        found
    }

    fn reverse<'a>(&'a self, ip: IpAddr, asker: IpAddr, via: &'a str) -> Option<&'a str> {
        self.visible(asker, via)
            .into_iter()
            .find_map(|r| r.reverse.get(&ip).map(String::as_str))
    }

    /// Decides what to do with one query that arrived on the gateway of
    /// network `via` from `asker`.
    pub fn answer(&self, query: &[u8], asker: IpAddr, via: &str) -> Decision {
        let Ok(req) = Message::from_vec(query) else {
            return Decision::Drop;
        };
        if req.metadata.message_type != MessageType::Query {
            return Decision::Drop;
        }
        let Some(q) = req.queries.first().cloned() else {
            return Decision::Drop;
        };
        let qname = q.name().to_lowercase().to_ascii();
        let qname = qname.trim_end_matches('.');
        let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
        resp.metadata = Metadata::response_from_request(&req.metadata);
        resp.metadata.recursion_available = true;
        resp.add_query(q.clone());
        if req.edns.is_some() {
            // An EDNS query gets an OPT record back (RFC 6891).
            let mut edns = Edns::new();
            edns.set_max_payload(UDP_EDNS);
            resp.edns = Some(edns);
        }

        if let Some(ip) = reverse_name(qname) {
            return match self.reverse(ip, asker, via) {
                Some(name) if q.query_type() == RecordType::PTR => {
                    let target = Name::from_str(&format!("{name}.{}.", DOMAINS[0]))
                        .unwrap_or_else(|_| Name::root());
                    resp.metadata.authoritative = true;
                    resp.add_answer(Record::from_rdata(
                        q.name().clone(),
                        TTL,
                        RData::PTR(PTR(target)),
                    ));
                    reply(resp)
                }
                Some(_) => {
                    resp.metadata.authoritative = true;
                    reply(resp)
                }
                None => Decision::Forward,
            };
        }

        let (short, own_domain) = strip_domain(qname);
        match self.lookup(short, asker, via) {
            Some(addrs) => {
                resp.metadata.authoritative = true;
                for a in addrs {
                    let rdata = match (a, q.query_type()) {
                        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
                        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                            RData::AAAA(AAAA(v6))
                        }
                        _ => continue,
                    };
                    resp.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
                }
                reply(resp)
            }
            None if own_domain => {
                resp.metadata.authoritative = true;
                resp.metadata.response_code = ResponseCode::NXDomain;
                reply(resp)
            }
            None => Decision::Forward,
        }
    }
}

fn reply(resp: Message) -> Decision {
    resp.to_vec().map_or(Decision::Drop, Decision::Reply)
}

/// A reply as a UDP client may take it: at most 512 bytes, or the payload
/// size its EDNS record offers (up to [`UDP_EDNS`]). A longer one loses its
/// last whole records and gets the TC flag, so the client asks again over
/// TCP.
pub fn fit_udp(query: &[u8], reply: Vec<u8>) -> Vec<u8> {
    if reply.len() <= UDP_PLAIN as usize {
        return reply;
    }
    let limit = Message::from_vec(query)
        .map(|q| q.max_payload().min(UDP_EDNS))
        .unwrap_or(UDP_PLAIN);
    if reply.len() <= limit as usize {
        return reply;
    }
    let Ok(msg) = Message::from_vec(&reply) else {
        return reply;
    };
    let mut buf = Vec::with_capacity(limit as usize);
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(limit);
    match msg.emit(&mut encoder) {
        Ok(()) => buf,
        Err(_) => reply,
    }
}

/// The name without rete's domain, and whether it was in it.
fn strip_domain(name: &str) -> (&str, bool) {
    for d in DOMAINS {
        if let Some(short) = name.strip_suffix(d).and_then(|s| s.strip_suffix('.')) {
            return (short, true);
        }
        if name == d {
            return ("", true);
        }
    }
    (name, false)
}

/// The address a reverse-lookup name asks about.
fn reverse_name(name: &str) -> Option<IpAddr> {
    if let Some(v4) = name.strip_suffix(".in-addr.arpa") {
        let mut parts: Vec<&str> = v4.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        parts.reverse();
        return parts.join(".").parse().ok();
    }
    let v6 = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = v6.split('.').collect();
    if nibbles.len() != 32 || nibbles.iter().any(|n| n.len() != 1) {
        return None;
    }
    let hex: String = nibbles.iter().rev().copied().collect();
    let value = u128::from_str_radix(&hex, 16).ok()?;
    Some(IpAddr::V6(value.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, Mode, Subnet};
    use hickory_proto::op::{Edns, Query};

    fn net(name: &str, gw: &str, subnet: &str) -> Network {
        Network {
            name: name.into(),
            id: "0".repeat(32),
            driver: Default::default(),
            bridge: format!("br-{name}"),
            subnets: vec![Subnet {
                subnet: subnet.parse().unwrap(),
                gateway: gw.parse().unwrap(),
                ip_range: None,
                range_start: None,
                range_end: None,
            }],
            internal: false,
            isolate: true,
            masquerade: true,
            dns: true,
            mtu: None,
            gso_max_size: None,
            direct: vec![],
            routes: vec![],
            no_default_route: false,
            metric: None,
            labels: Default::default(),
            options: Default::default(),
            created: 0,
        }
    }

    fn container(name: &str, eps: &[(&str, &str)]) -> Container {
        Container {
            name: name.into(),
            id: format!("{name:0<32}"),
            mode: Mode::Bridge,
            netns: None,
            owns_netns: true,
            endpoints: eps
                .iter()
                .map(|(n, a)| Endpoint {
                    network: n.to_string(),
                    ifname: "eth0".into(),
                    host_ifname: "x".into(),
                    mac: String::new(),
                    addresses: vec![a.parse().unwrap()],
                    gateways: vec![],
                    aliases: vec![format!("{name}-alias")],
                    bandwidth: None,
                })
                .collect(),
            ports: vec![],
            hostname: None,
            labels: Default::default(),
            processes: vec![],
            created: 0,
        }
    }

    fn ask(zone: &Zone, name: &str, t: RecordType, from: &str, via: &str) -> Decision {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(Query::query(Name::from_str(name).unwrap(), t));
        zone.answer(&m.to_vec().unwrap(), from.parse().unwrap(), via)
    }

    fn answers(d: Decision) -> (ResponseCode, Vec<String>) {
        let Decision::Reply(bytes) = d else {
            panic!("{d:?}")
        };
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.id, 7);
        (
            m.metadata.response_code,
            m.answers.iter().map(|r| r.data.to_string()).collect(),
        )
    }

    fn zone() -> Zone {
        let nets = [
            net("a", "10.1.0.1", "10.1.0.0/24"),
            net("b", "10.2.0.1", "10.2.0.0/24"),
        ];
        let cs = [
            container("web", &[("a", "10.1.0.2/24")]),
            container("db", &[("b", "10.2.0.2/24")]),
            container("both", &[("a", "10.1.0.3/24"), ("b", "10.2.0.3/24")]),
        ];
        Zone::build(&nets, &cs)
    }

    #[test]
    fn names_resolve_on_shared_networks_only() {
        let z = zone();
        assert_eq!(
            answers(ask(&z, "db.", RecordType::A, "10.1.0.3", "a")).1,
            ["10.2.0.2"]
        );
        assert_eq!(
            answers(ask(&z, "db.rete.", RecordType::A, "10.1.0.3", "a")).1,
            ["10.2.0.2"]
        );
        assert_eq!(
            answers(ask(&z, "web-alias.", RecordType::A, "10.1.0.3", "a")).1,
            ["10.1.0.2"]
        );
        // web is not on b: db is invisible to it.
        assert_eq!(
            ask(&z, "db.", RecordType::A, "10.1.0.2", "a"),
            Decision::Forward
        );
        let (code, none) = answers(ask(&z, "db.rete.", RecordType::A, "10.1.0.2", "a"));
        assert_eq!((code, none.len()), (ResponseCode::NXDomain, 0));
        // A container on two networks is found on both.
        assert_eq!(
            answers(ask(&z, "both.", RecordType::A, "10.2.0.2", "b")).1,
            ["10.2.0.3"]
        );
        assert_eq!(
            answers(ask(&z, "both.", RecordType::A, "10.1.0.2", "a")).1,
            ["10.1.0.3"]
        );
    }

    #[test]
    fn udp_replies_fit_what_the_client_can_take() {
        // 60 containers answering to one alias: 60 A records, over 512 bytes.
        let nets = [net("a", "10.1.0.1", "10.1.0.0/24")];
        let cs: Vec<Container> = (0..60)
            .map(|i| {
                let mut c = container(&format!("w{i}"), &[("a", &format!("10.1.0.{}/24", i + 10))]);
                c.endpoints[0].aliases = vec!["pool".into()];
                c
            })
            .collect();
        let z = Zone::build(&nets, &cs);
        let mut q = Message::query();
        q.metadata.id = 7;
        q.add_query(Query::query(
            Name::from_str("pool.").unwrap(),
            RecordType::A,
        ));
        let plain = q.to_vec().unwrap();
        let Decision::Reply(full) = z.answer(&plain, "10.1.0.10".parse().unwrap(), "a") else {
            panic!()
        };
        // Over TCP, everything.
        let m = Message::from_vec(&full).unwrap();
        assert_eq!(m.answers.len(), 60);
        assert!(!m.metadata.truncation);
        // Over UDP without EDNS: 512 bytes at most, whole records, TC set.
        let cut = fit_udp(&plain, full.clone());
        assert!(cut.len() <= 512, "{}", cut.len());
        let m = Message::from_vec(&cut).unwrap();
        assert!(m.metadata.truncation);
        assert!(!m.answers.is_empty() && m.answers.len() < 60);
        assert_eq!(m.metadata.id, 7);
        // With EDNS offering 4096: all of it fits in 1232.
        let mut e = q.clone();
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        e.edns = Some(edns);
        let with_edns = e.to_vec().unwrap();
        let Decision::Reply(full) = z.answer(&with_edns, "10.1.0.10".parse().unwrap(), "a") else {
            panic!()
        };
        let m = Message::from_vec(&fit_udp(&with_edns, full)).unwrap();
        assert_eq!(m.answers.len(), 60);
        assert!(!m.metadata.truncation);
        // ... and the reply carries an OPT record of its own (RFC 6891).
        assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(UDP_EDNS));
        // Small replies pass untouched.
        let Decision::Reply(small) =
            z.answer(&plain_query("w1."), "10.1.0.10".parse().unwrap(), "a")
        else {
            panic!()
        };
        assert_eq!(fit_udp(&plain_query("w1."), small.clone()), small);
    }

    fn plain_query(name: &str) -> Vec<u8> {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        q.to_vec().unwrap()
    }

    #[test]
    fn nodata_reverse_and_forward() {
        let z = zone();
        let (code, none) = answers(ask(&z, "web.", RecordType::AAAA, "10.1.0.3", "a"));
        assert_eq!((code, none.len()), (ResponseCode::NoError, 0));
        assert_eq!(
            answers(ask(
                &z,
                "2.0.1.10.in-addr.arpa.",
                RecordType::PTR,
                "10.1.0.3",
                "a"
            ))
            .1,
            ["web.rete."]
        );
        assert_eq!(
            ask(&z, "example.org.", RecordType::A, "10.1.0.3", "a"),
            Decision::Forward
        );
        assert_eq!(
            z.answer(b"junk", "10.1.0.3".parse().unwrap(), "a"),
            Decision::Drop
        );
    }
}
