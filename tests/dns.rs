//! The embedded resolver, asked from inside containers with real clients
//! (dig, busybox nslookup) over UDP and TCP, IPv4 and IPv6: names, ids and
//! aliases per network, reverse lookups, visibility across networks,
//! forwarding to an upstream (a stub server of our own in the lab's outside
//! namespace, the only upstream there is), records that follow the store
//! without a restart, networks without DNS, and no lost query while
//! containers come and go.
//!
//! Every query goes to an address inside the lab's namespaces: dig is always
//! given its server, and the upstream file names only the stub.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use common::*;

const FRONT4: &str = "10.89.1.0/24";
const FRONT6: &str = "fd00:89:1::/64";
const FRONT_GW: &str = "10.89.1.1";
const FRONT_GW6: &str = "fd00:89:1::1";
const BACK4: &str = "10.89.2.0/24";
const BACK_GW: &str = "10.89.2.1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// What dig said: the response status ("NOERROR", "NXDOMAIN", ... or
/// "NO ANSWER" when nothing answered) and the answer records' data.
#[derive(Debug)]
struct Dig {
    status: String,
    /// The header flags: "qr aa rd ra", "tc" when truncated.
    flags: Vec<String>,
    answers: Vec<String>,
    out: String,
}

fn parse_dig(out: &str) -> Dig {
    let status = out
        .lines()
        .find_map(|l| {
            let s = l.split("status: ").nth(1)?;
            Some(s.split(',').next()?.to_string())
        })
        .unwrap_or_else(|| "NO ANSWER".into());
    let answers = out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .collect();
    let flags = out
        .lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .and_then(|f| f.split(';').next())
        .map(|f| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    Dig {
        status,
        flags,
        answers,
        out: out.to_string(),
    }
}

const DIG: [&str; 6] = [
    "dig",
    "+time=1",
    "+tries=2",
    "+noall",
    "+comments",
    "+answer",
];

/// `dig ARGS` inside container `c` (through `rete exec`, so with the
/// container's resolv.conf over /etc).
fn dig_in(lab: &Lab, c: &str, args: &[&str]) -> Dig {
    let mut a = vec!["exec", c, "--"];
    a.extend(DIG);
    a.extend(args);
    parse_dig(&String::from_utf8_lossy(&lab.rete(&a).stdout))
}

/// `dig @SERVER EXTRA... NAME` in container `c` (EXTRA: a type, +tcp,
/// -x for a reverse lookup of the address NAME).
fn ask(lab: &Lab, c: &str, server: &str, name: &str, extra: &[&str]) -> Dig {
    let at = format!("@{server}");
    let mut args = vec![at.as_str()];
    args.extend(extra);
    args.push(name);
    dig_in(lab, c, &args)
}

/// `dig` in the lab's host namespace (an asker rete does not know).
fn ask_from_host(lab: &Lab, server: &str, name: &str) -> Dig {
    let script = format!("{} @{server} {name} || true", DIG.join(" "));
    parse_dig(&lab.sh_host(&script))
}

#[track_caller]
fn assert_answer(d: &Dig, want: &[&str]) {
    assert_eq!(d.status, "NOERROR", "{}", d.out);
    let mut got = d.answers.clone();
    got.sort();
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "{}", d.out);
}

#[track_caller]
fn assert_nxdomain(d: &Dig) {
    assert_eq!(d.status, "NXDOMAIN", "{}", d.out);
    assert!(d.answers.is_empty(), "{}", d.out);
}

/// Polls `f` every 50 ms until it holds or `limit` passes; returns how long
/// it took.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if f() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `c` gets `name` answered by `server` (NOERROR, with
/// addresses): the resolver has caught up with the store. It polls the
/// store every 20 ms, so a name is served some milliseconds after the
/// command that made it returned; every test checks a fresh name this way
/// first, then everything older is in the same zone.
#[track_caller]
fn settle(lab: &Lab, c: &str, server: &str, name: &str) {
    let ok = within(Duration::from_secs(2), || {
        let d = ask(lab, c, server, name, &[]);
        d.status == "NOERROR" && !d.answers.is_empty()
    });
    assert!(ok.is_some(), "{name} never resolved from {c} via {server}");
}

fn resolver_pid(lab: &Lab) -> Option<i32> {
    std::fs::read_to_string(lab.dir.join("run/dns.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    // Not a zombie either: the resolver runs in its own process group and is
    // reaped by init once it exits.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let rest = &s[s.rfind(')').unwrap_or(0) + 1..];
            !rest.trim_start().starts_with('Z')
        })
        .unwrap_or(false)
}

/// Sockets listening on port 53 in the lab's host namespace.
fn port53_listeners(lab: &Lab) -> String {
    lab.sh_host("ss -Hlnut 'sport = :53'")
}

fn write_upstreams(lab: &Lab, text: &str) {
    // Write then rename, as resolvconf and NetworkManager do.
    let tmp = lab.dir.join("upstream-resolv.conf.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, lab.dir.join("upstream-resolv.conf")).unwrap();
}

/// A one-name DNS server standing for the world's resolvers: answers
/// `name` A with `addr`, everything else NXDOMAIN, over UDP and TCP on
/// `at`:53 in namespace `ns`, until dropped (or after 120 s).
struct Stub {
    stop: Arc<AtomicBool>,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn stub_reply(query: &[u8], name: &str, addr: Ipv4Addr) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    let q = req.queries.first()?.clone();
    let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
    resp.metadata = Metadata::response_from_request(&req.metadata);
    resp.metadata.recursion_available = true;
    resp.add_query(q.clone());
    let qname = q.name().to_lowercase().to_ascii();
    if qname.trim_end_matches('.') == name {
        if q.query_type() == RecordType::A {
            resp.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(A(addr))));
        }
    } else {
        resp.metadata.response_code = ResponseCode::NXDomain;
    }
    resp.to_vec().ok()
}

impl Stub {
    fn start(ns: &Path, at: IpAddr, name: &str, addr: Ipv4Addr) -> Stub {
        let stop = Arc::new(AtomicBool::new(false));
        let udp_queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + Duration::from_secs(120);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        {
            let (file, stop, count, name, tx) = (
                std::fs::File::open(ns).unwrap(),
                stop.clone(),
                udp_queries.clone(),
                name.to_string(),
                tx.clone(),
            );
            threads.push(std::thread::spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let s = UdpSocket::bind(SocketAddr::new(at, 53)).expect("bind stub (udp)");
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                tx.send(()).unwrap();
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if let Ok((n, peer)) = s.recv_from(&mut buf) {
                        count.fetch_add(1, Ordering::SeqCst);
                        if let Some(r) = stub_reply(&buf[..n], &name, addr) {
                            let _ = s.send_to(&r, peer);
                        }
                    }
                }
            }));
        }
        {
            let (file, stop, count, name) = (
                std::fs::File::open(ns).unwrap(),
                stop.clone(),
                tcp_queries.clone(),
                name.to_string(),
            );
            threads.push(std::thread::spawn(move || {
                use std::io::{Read, Write};
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let l = TcpListener::bind(SocketAddr::new(at, 53)).expect("bind stub (tcp)");
                l.set_nonblocking(true).unwrap();
                tx.send(()).unwrap();
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let Ok((mut conn, _)) = l.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    loop {
                        let mut len = [0u8; 2];
                        if conn.read_exact(&mut len).is_err() {
                            break;
                        }
                        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                        if conn.read_exact(&mut q).is_err() {
                            break;
                        }
                        count.fetch_add(1, Ordering::SeqCst);
                        let Some(r) = stub_reply(&q, &name, addr) else {
                            break;
                        };
                        let mut out = (r.len() as u16).to_be_bytes().to_vec();
                        out.extend(r);
                        if conn.write_all(&out).is_err() {
                            break;
                        }
                    }
                }
            }));
        }
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(3))
                .expect("stub upstream started");
        }
        Stub {
            stop,
            udp_queries,
            tcp_queries,
            threads,
        }
    }

    fn udp(&self) -> usize {
        self.udp_queries.load(Ordering::SeqCst)
    }

    fn tcp(&self) -> usize {
        self.tcp_queries.load(Ordering::SeqCst)
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn id12(lab: &Lab, c: &str) -> String {
    lab.inspect(c)["id"].as_str().unwrap()[..12].to_string()
}

#[test]
fn names_ids_aliases_and_reverse_over_udp_tcp_and_ipv6() {
    require_root!();
    let lab = Lab::new("dns-names");
    lab.rete_ok(&[
        "network", "create", "front", "--subnet", FRONT4, "--subnet", FRONT6,
    ]);
    lab.rete_ok(&[
        "create",
        "web",
        "--network",
        "front",
        "--network-alias",
        "www",
        "--network-alias",
        "Static",
    ]);
    lab.rete_ok(&["create", "client", "--network", "front"]);
    settle(&lab, "web", FRONT_GW, "client");
    let web4 = lab.addr_of("web", "front", false).to_string();
    let web6 = lab.addr_of("web", "front", true).to_string();
    let id = id12(&lab, "web");

    // The container's /etc carries rete's resolv.conf and hosts.
    let resolv = lab.rete_ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains(&format!("nameserver {FRONT_GW}\n")),
        "{resolv}"
    );
    assert!(resolv.contains("search rete"), "{resolv}");
    let hosts = lab.rete_ok(&["exec", "client", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains("client"), "{hosts}");

    // A libc-less stub resolver reading that resolv.conf: A and AAAA.
    let ns = lab.rete_ok(&["exec", "client", "--", "busybox", "nslookup", "web"]);
    assert!(ns.contains(&web4), "{ns}");
    assert!(ns.contains(&web6), "{ns}");
    let ns = lab.rete_ok(&["exec", "client", "--", "busybox", "nslookup", "www.rete"]);
    assert!(ns.contains(&web4), "{ns}");

    // dig with the nameserver from resolv.conf.
    assert_answer(&dig_in(&lab, "client", &["web"]), &[&web4]);

    // Every name of web, in every form, over UDP and TCP, asked on the
    // IPv4 and the IPv6 gateway.
    for server in [FRONT_GW, FRONT_GW6] {
        for tcp in [&[][..], &["+tcp"][..]] {
            for name in [
                "web",
                "web.",
                "web.rete",
                "WEB.Rete.",
                "web.dns.podman",
                "www",
                "www.rete",
                "static",
                id.as_str(),
                &format!("{id}.rete"),
            ] {
                let mut a = vec!["A"];
                a.extend(tcp);
                assert_answer(&ask(&lab, "client", server, name, &a), &[&web4]);
            }
            let mut a = vec!["AAAA"];
            a.extend(tcp);
            assert_answer(&ask(&lab, "client", server, "web.rete", &a), &[&web6]);
            assert_answer(&ask(&lab, "client", server, "www", &a), &[&web6]);
            // Reverse lookups, both families.
            let mut a = tcp.to_vec();
            a.push("-x");
            for addr in [&web4, &web6] {
                assert_answer(&ask(&lab, "client", server, addr, &a), &["web.rete."]);
            }
            // Unknown names in rete's domains are rete's to deny.
            let mut a = vec!["A"];
            a.extend(tcp);
            assert_nxdomain(&ask(&lab, "client", server, "nosuch.rete", &a));
            assert_nxdomain(&ask(&lab, "client", server, "nosuch.dns.podman", &a));
        }
    }
    // The asker finds itself too.
    let client4 = lab.addr_of("client", "front", false).to_string();
    assert_answer(&ask(&lab, "web", FRONT_GW, "client.rete", &[]), &[&client4]);

    lab.rete_ok(&["rm", "web", "client"]);
    lab.rete_ok(&["network", "rm", "front"]);
}

#[test]
fn names_are_visible_only_on_shared_networks() {
    require_root!();
    let lab = Lab::new("dns-nets");
    lab.rete_ok(&["network", "create", "front", "--subnet", FRONT4]);
    lab.rete_ok(&["network", "create", "back", "--subnet", BACK4]);
    lab.rete_ok(&["create", "web", "--network", "front"]);
    lab.rete_ok(&["create", "db", "--network", "back"]);
    lab.rete_ok(&["create", "both", "--network", "front", "--network", "back"]);
    lab.rete_ok(&["create", "late", "--network", "front"]);
    settle(&lab, "web", FRONT_GW, "late");
    let web = lab.addr_of("web", "front", false).to_string();
    let db = lab.addr_of("db", "back", false).to_string();
    let both_f = lab.addr_of("both", "front", false).to_string();
    let both_b = lab.addr_of("both", "back", false).to_string();

    // A container on two networks is found on both, with the address of the
    // network the asker shares with it.
    assert_answer(&ask(&lab, "web", FRONT_GW, "both", &[]), &[&both_f]);
    assert_answer(&ask(&lab, "db", BACK_GW, "both.rete", &[]), &[&both_b]);
    assert_answer(&ask(&lab, "db", BACK_GW, "both", &["+tcp"]), &[&both_b]);
    // ... and sees both networks, whichever gateway it asks.
    assert_answer(&ask(&lab, "both", FRONT_GW, "db", &[]), &[&db]);
    assert_answer(&ask(&lab, "both", BACK_GW, "web", &[]), &[&web]);
    // Reverse: names of the other network stay hidden.
    assert_answer(&ask(&lab, "both", FRONT_GW, &db, &["-x"]), &["db.rete."]);

    // Names living only on another network do not resolve.
    assert_nxdomain(&ask(&lab, "web", FRONT_GW, "db.rete", &[]));
    assert_nxdomain(&ask(&lab, "web", FRONT_GW, "db.rete", &["+tcp"]));
    assert_nxdomain(&ask(&lab, "web", FRONT_GW, "db.dns.podman", &[]));
    assert_nxdomain(&ask(&lab, "db", BACK_GW, "web.rete", &[]));
    // Asking the other network's gateway does not widen the view: the
    // asker is known by its address.
    assert_nxdomain(&ask(&lab, "web", BACK_GW, "db.rete", &[]));
    // A bare name rete does not serve this asker goes upstream (there is
    // none here): never db's address.
    let d = ask(&lab, "web", FRONT_GW, "db", &[]);
    assert!(!d.answers.contains(&db), "{}", d.out);

    // Unknown askers (the host itself) see the network whose gateway they
    // ask.
    assert_answer(&ask_from_host(&lab, BACK_GW, "db.rete"), &[&db]);
    assert_nxdomain(&ask_from_host(&lab, FRONT_GW, "db.rete"));
    assert_answer(&ask_from_host(&lab, FRONT_GW, "web.rete"), &[&web]);

    // `network connect --alias`: late joins back under another name there.
    lab.rete_ok(&["network", "connect", "back", "late", "--alias", "cache"]);
    settle(&lab, "db", BACK_GW, "cache");
    let late_f = lab.addr_of("late", "front", false).to_string();
    let late_b = lab.addr_of("late", "back", false).to_string();
    assert_answer(&ask(&lab, "db", BACK_GW, "cache.rete", &[]), &[&late_b]);
    assert_answer(&ask(&lab, "db", BACK_GW, "late", &[]), &[&late_b]);
    assert_answer(&ask(&lab, "web", FRONT_GW, "late", &[]), &[&late_f]);
    // The alias is back's only.
    assert_nxdomain(&ask(&lab, "web", FRONT_GW, "cache.rete", &[]));
    // late, now on both, sees db.
    assert_answer(&ask(&lab, "late", FRONT_GW, "db", &[]), &[&db]);

    // Disconnecting takes the alias away.
    lab.rete_ok(&["network", "disconnect", "back", "late"]);
    assert!(
        within(Duration::from_secs(1), || ask(
            &lab,
            "db",
            BACK_GW,
            "cache.rete",
            &[]
        )
        .status
            == "NXDOMAIN")
        .is_some(),
        "cache still resolves after disconnect"
    );
    assert_nxdomain(&ask(&lab, "late", FRONT_GW, "db.rete", &[]));

    lab.rete_ok(&["rm", "web", "db", "both", "late"]);
    lab.rete_ok(&["network", "rm", "front", "back"]);
}

#[test]
fn other_names_are_forwarded_to_the_upstream_file_and_it_is_reread() {
    require_root!();
    let lab = Lab::new("dns-fwd");
    // The only upstream: a stub in the outside namespace.
    let first = Stub::start(
        &lab.outside,
        ip(UPLINK_OUTSIDE),
        "upstream.example",
        Ipv4Addr::new(198, 51, 100, 7),
    );
    write_upstreams(&lab, &format!("# lab\nnameserver {UPLINK_OUTSIDE}\n"));
    lab.rete_ok(&[
        "network", "create", "front", "--subnet", FRONT4, "--subnet", FRONT6,
    ]);
    lab.rete_ok(&["create", "web", "--network", "front"]);
    lab.rete_ok(&["create", "client", "--network", "front"]);
    settle(&lab, "web", FRONT_GW, "client");

    assert_answer(
        &dig_in(&lab, "client", &["upstream.example"]),
        &["198.51.100.7"],
    );
    assert!(first.udp() >= 1);
    assert_answer(
        &ask(&lab, "client", FRONT_GW, "upstream.example", &["+tcp"]),
        &["198.51.100.7"],
    );
    assert!(first.tcp() >= 1, "the TCP query went upstream over TCP");
    // Over the IPv6 gateway too.
    assert_answer(
        &ask(&lab, "client", FRONT_GW6, "upstream.example", &[]),
        &["198.51.100.7"],
    );
    // busybox, through resolv.conf.
    let out = lab.rete_ok(&[
        "exec",
        "client",
        "--",
        "busybox",
        "nslookup",
        "upstream.example",
    ]);
    assert!(out.contains("198.51.100.7"), "{out}");
    // The upstream's NXDOMAIN comes back as it is.
    assert_nxdomain(&ask(&lab, "client", FRONT_GW, "nowhere.example", &[]));
    // Local names are not forwarded.
    let before = first.udp();
    let web = lab.addr_of("web", "front", false).to_string();
    assert_answer(&ask(&lab, "client", FRONT_GW, "web", &[]), &[&web]);
    assert_nxdomain(&ask(&lab, "client", FRONT_GW, "nosuch.rete", &[]));
    assert_eq!(first.udp(), before, "rete's own names went upstream");

    // Another upstream: the file changes, the resolver follows without a
    // restart.
    let pid = resolver_pid(&lab).expect("resolver pid");
    lab.sh_outside("ip addr add 192.0.2.3/24 dev wan");
    let second = Stub::start(
        &lab.outside,
        ip("192.0.2.3"),
        "upstream.example",
        Ipv4Addr::new(198, 51, 100, 8),
    );
    write_upstreams(&lab, "nameserver 192.0.2.3\n");
    let took = within(Duration::from_secs(2), || {
        ask(&lab, "client", FRONT_GW, "upstream.example", &[]).answers == ["198.51.100.8"]
    })
    .expect("the new upstream file was not re-read");
    assert!(took < Duration::from_secs(1), "re-read took {took:?}");
    let before = first.udp();
    assert_answer(
        &ask(&lab, "client", FRONT_GW, "upstream.example", &["+tcp"]),
        &["198.51.100.8"],
    );
    assert_answer(
        &ask(&lab, "client", FRONT_GW, "upstream.example", &[]),
        &["198.51.100.8"],
    );
    assert_eq!(first.udp(), before, "the old upstream is still asked");
    assert!(second.udp() >= 1 && second.tcp() >= 1);
    assert_eq!(resolver_pid(&lab), Some(pid));
    assert!(alive(pid));

    // No upstream at all: forwarded names get no answer, local ones do.
    write_upstreams(&lab, "# none\n");
    std::thread::sleep(Duration::from_millis(200));
    let before = second.udp();
    let d = ask(&lab, "client", FRONT_GW, "upstream.example", &[]);
    assert!(d.answers.is_empty(), "{}", d.out);
    assert_eq!(second.udp(), before);
    assert_answer(&ask(&lab, "client", FRONT_GW, "web", &[]), &[&web]);

    lab.rete_ok(&["rm", "web", "client"]);
    lab.rete_ok(&["network", "rm", "front"]);
}

#[test]
fn long_answers_are_truncated_over_udp_and_whole_over_tcp() {
    require_root!();
    let lab = Lab::new("dns-long");
    lab.rete_ok(&["network", "create", "front", "--subnet", FRONT4]);
    // 40 replicas behind one alias: 40 A records, over 512 bytes.
    let mut want = Vec::new();
    for i in 0..40 {
        let name = format!("r{i}");
        lab.rete_ok(&[
            "create",
            &name,
            "--network",
            "front",
            "--network-alias",
            "pool",
        ]);
        want.push(lab.addr_of(&name, "front", false).to_string());
    }
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    settle(&lab, "r0", FRONT_GW, "r39");
    // Plain UDP: 512 bytes at most, so whole records only and the TC flag.
    let d = ask(&lab, "r0", FRONT_GW, "pool", &["+noedns", "+ignore"]);
    assert!(d.flags.contains(&"tc".to_string()), "{}", d.out);
    assert!(!d.answers.is_empty() && d.answers.len() < 40, "{}", d.out);
    for a in &d.answers {
        assert!(want.contains(&a.as_str()), "{}", d.out);
    }
    // dig then retries over TCP, as resolvers do, and gets all of them.
    assert_answer(&ask(&lab, "r0", FRONT_GW, "pool", &["+noedns"]), &want);
    assert_answer(&ask(&lab, "r0", FRONT_GW, "pool", &["+tcp"]), &want);
    // EDNS (dig offers 1232 bytes): all 40 fit in one datagram.
    let d = ask(&lab, "r0", FRONT_GW, "pool", &["+ignore"]);
    assert!(!d.flags.contains(&"tc".to_string()), "{}", d.out);
    assert_answer(&d, &want);
    assert!(
        d.out.contains("OPT PSEUDOSECTION") || d.out.contains("EDNS"),
        "{}",
        d.out
    );

    let names: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    let mut args = vec!["rm"];
    args.extend(names.iter().map(String::as_str));
    lab.rete_ok(&args);
    lab.rete_ok(&["network", "rm", "front"]);
}

#[test]
fn records_follow_the_store_without_a_restart() {
    require_root!();
    let lab = Lab::new("dns-follow");
    lab.rete_ok(&["network", "create", "front", "--subnet", FRONT4]);
    lab.rete_ok(&["create", "client", "--network", "front"]);
    settle(&lab, "client", FRONT_GW, "client");
    assert_nxdomain(&ask(&lab, "client", FRONT_GW, "late.rete", &[]));
    let pid = resolver_pid(&lab).expect("resolver pid");
    assert!(alive(pid));

    for round in 0..3 {
        lab.rete_ok(&[
            "create",
            "late",
            "--network",
            "front",
            "--network-alias",
            "later",
        ]);
        let late = lab.addr_of("late", "front", false).to_string();
        let took = within(Duration::from_secs(2), || {
            ask(&lab, "client", FRONT_GW, "late.rete", &[]).answers == [late.clone()]
        })
        .unwrap_or_else(|| panic!("round {round}: late never resolved"));
        assert!(
            took < Duration::from_secs(1),
            "round {round}: took {took:?}"
        );
        assert_answer(&ask(&lab, "client", FRONT_GW, "later", &["+tcp"]), &[&late]);
        assert_answer(
            &ask(&lab, "client", FRONT_GW, &late, &["-x"]),
            &["late.rete."],
        );

        lab.rete_ok(&["rm", "late"]);
        let took = within(Duration::from_secs(2), || {
            ask(&lab, "client", FRONT_GW, "late.rete", &[]).status == "NXDOMAIN"
        })
        .unwrap_or_else(|| panic!("round {round}: late still resolves"));
        assert!(
            took < Duration::from_secs(1),
            "round {round}: took {took:?}"
        );
        assert_nxdomain(&ask(&lab, "client", FRONT_GW, "later.rete", &[]));
        assert_eq!(resolver_pid(&lab), Some(pid), "the resolver restarted");
        assert!(alive(pid));
    }

    // A network added later is served by the same resolver on its gateway.
    lab.rete_ok(&["network", "create", "back", "--subnet", BACK4]);
    lab.rete_ok(&["create", "db", "--network", "back"]);
    let db = lab.addr_of("db", "back", false).to_string();
    let took = within(Duration::from_secs(2), || {
        ask(&lab, "db", BACK_GW, "db.rete", &[]).answers == [db.clone()]
    });
    assert!(took.is_some(), "the new network's gateway does not answer");
    assert_eq!(resolver_pid(&lab), Some(pid));
    // Its removal closes its sockets, the other network still answers.
    lab.rete_ok(&["rm", "db"]);
    lab.rete_ok(&["network", "rm", "back"]);
    assert!(
        within(Duration::from_secs(1), || !port53_listeners(&lab)
            .contains(BACK_GW))
        .is_some(),
        "{}",
        port53_listeners(&lab)
    );
    let client = lab.addr_of("client", "front", false).to_string();
    assert_answer(&ask(&lab, "client", FRONT_GW, "client", &[]), &[&client]);

    // The last DNS network gone, the resolver ends.
    lab.rete_ok(&["rm", "client"]);
    lab.rete_ok(&["network", "rm", "front"]);
    assert!(
        within(Duration::from_secs(1), || !alive(pid)).is_some(),
        "the resolver outlived its last network"
    );
    assert_eq!(port53_listeners(&lab), "");
}

#[test]
fn a_network_with_dns_disabled_has_no_resolver() {
    require_root!();
    let lab = Lab::new("dns-off");
    lab.rete_ok(&[
        "network",
        "create",
        "quiet",
        "--subnet",
        "10.89.3.0/24",
        "--disable-dns",
    ]);
    lab.rete_ok(&["create", "q1", "--network", "quiet"]);
    lab.rete_ok(&["create", "q2", "--network", "quiet"]);
    // No resolver was started, no resolv.conf written (hosts still is).
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(port53_listeners(&lab), "");
    assert!(resolver_pid(&lab).is_none_or(|p| !alive(p)));
    assert!(!lab.dir.join("etc/q1/resolv.conf").exists());
    assert!(lab.dir.join("etc/q1/hosts").exists());
    let d = ask(&lab, "q1", "10.89.3.1", "q2", &[]);
    assert_eq!(d.status, "NO ANSWER", "{}", d.out);

    // With a DNS network beside it, the resolver runs but still not on
    // quiet's gateway, and quiet's containers are nobody's names.
    lab.rete_ok(&["network", "create", "front", "--subnet", FRONT4]);
    lab.rete_ok(&["create", "web", "--network", "front"]);
    lab.rete_ok(&[
        "create",
        "mixed",
        "--network",
        "front",
        "--network",
        "quiet",
    ]);
    settle(&lab, "web", FRONT_GW, "mixed");
    let web = lab.addr_of("web", "front", false).to_string();
    assert_answer(&ask(&lab, "web", FRONT_GW, "web", &[]), &[&web]);
    let listeners = port53_listeners(&lab);
    assert!(listeners.contains(FRONT_GW), "{listeners}");
    assert!(!listeners.contains("10.89.3.1"), "{listeners}");
    for tcp in [&[][..], &["+tcp"][..]] {
        let d = ask(&lab, "q1", "10.89.3.1", "q2", tcp);
        assert_eq!(d.status, "NO ANSWER", "{}", d.out);
    }
    assert_nxdomain(&ask(&lab, "web", FRONT_GW, "q2.rete", &[]));
    assert_nxdomain(&ask(&lab, "mixed", FRONT_GW, "q2.rete", &[]));
    // mixed's resolv.conf names front's resolver, the only one it has.
    let resolv = std::fs::read_to_string(lab.dir.join("etc/mixed/resolv.conf")).unwrap();
    assert!(
        resolv.contains(&format!("nameserver {FRONT_GW}\n")),
        "{resolv}"
    );
    assert!(!resolv.contains("10.89.3.1"), "{resolv}");

    lab.rete_ok(&["rm", "q1", "q2", "web", "mixed"]);
    lab.rete_ok(&["network", "rm", "quiet", "front"]);
}

/// A query for `name` A with id `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

#[derive(Debug, Default)]
struct Load {
    sent: usize,
    failed: usize,
    slowest: Duration,
    failures: Vec<String>,
}

/// Asks `server` for `name` every `every` from namespace `ns` until `stop`,
/// each query with a 1 s timeout; a query fails unless `want` comes back.
fn load(
    ns: &Path,
    server: IpAddr,
    name: &str,
    want: IpAddr,
    every: Duration,
    stop: &AtomicBool,
) -> Load {
    in_ns(ns, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(SocketAddr::new(server, 53)).unwrap();
        let mut l = Load::default();
        let mut buf = [0u8; 1500];
        let mut next = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let id = (l.sent % 65536) as u16;
            l.sent += 1;
            let t0 = Instant::now();
            let mut ok = Err("timeout".to_string());
            if s.send(&query(id, name)).is_ok() {
                loop {
                    let left = Duration::from_secs(1).saturating_sub(t0.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    s.set_read_timeout(Some(left)).unwrap();
                    let Ok(n) = s.recv(&mut buf) else { break };
                    let Ok(m) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    if m.metadata.id != id {
                        continue; // a late answer to an earlier query
                    }
                    let got: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
                    ok = if m.metadata.response_code == ResponseCode::NoError
                        && got == [want.to_string()]
                    {
                        Ok(())
                    } else {
                        Err(format!("{:?} {got:?}", m.metadata.response_code))
                    };
                    break;
                }
            }
            l.slowest = l.slowest.max(t0.elapsed());
            if let Err(e) = ok {
                l.failed += 1;
                l.failures.push(format!("query {id}: {e}"));
            }
            next += every;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            } else {
                next = Instant::now();
            }
        }
        l
    })
}

#[test]
fn no_query_is_lost_while_containers_come_and_go() {
    require_root!();
    let lab = Lab::new("dns-churn");
    lab.rete_ok(&["network", "create", "churn", "--subnet", "10.89.4.0/22"]);
    lab.rete_ok(&["create", "stable", "--network", "churn"]);
    lab.rete_ok(&["create", "asker", "--network", "churn"]);
    settle(&lab, "stable", "10.89.4.1", "asker");
    let stable = lab.addr_of("stable", "churn", false);
    let pid = resolver_pid(&lab).expect("resolver pid");

    // 200 queries a second from asker's namespace.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (ns, stop) = (lab.container_ns("asker"), stop.clone());
        std::thread::spawn(move || {
            load(
                &ns,
                ip("10.89.4.1"),
                "stable.rete.",
                stable,
                Duration::from_millis(5),
                &stop,
            )
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // 100 containers come and go, at most 10 alive at a time.
    let t0 = Instant::now();
    for i in 0..100 {
        lab.rete_ok(&["create", &format!("c{i}"), "--network", "churn"]);
        if i >= 10 {
            lab.rete_ok(&["rm", &format!("c{}", i - 10)]);
        }
    }
    for i in 90..100 {
        lab.rete_ok(&["rm", &format!("c{i}")]);
    }
    let churn = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let l = client.join().unwrap();
    eprintln!(
        "churn of 100 containers took {churn:?}: {} queries, {} failed, slowest {:?}",
        l.sent, l.failed, l.slowest
    );
    assert_eq!(
        l.failed,
        0,
        "lost queries: {:?}",
        &l.failures[..l.failures.len().min(20)]
    );
    // The load really ran alongside, at about its rate.
    let expected = (churn.as_secs_f64() * 200.0) as usize;
    assert!(
        l.sent >= expected / 2,
        "only {} queries in {churn:?}",
        l.sent
    );
    assert_eq!(resolver_pid(&lab), Some(pid));
    assert!(alive(pid));

    lab.rete_ok(&["rm", "stable", "asker"]);
    lab.rete_ok(&["network", "rm", "churn"]);
}
