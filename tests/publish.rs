//! Published ports, in every Docker `-p` form: each must answer from the
//! outside, from the host itself (on its uplink address and, when published
//! on every address, on 127.0.0.1), from the publishing container through
//! the host (hairpin) and from its neighbours. Claims clash by address, port
//! and protocol, and a removed container's ports stop answering.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;

use common::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Proto {
    Tcp,
    Udp,
}

/// The network "pub", a container "web" publishing `publish`, and a
/// neighbour "peer" on the same network.
struct Setup {
    web_ns: PathBuf,
    web4: IpAddr,
    web6: Option<IpAddr>,
    peer_ns: PathBuf,
}

fn setup(lab: &Lab, subnets: &[&str], publish: &[&str]) -> Setup {
    let mut args = vec!["network", "create", "pub"];
    for s in subnets {
        args.extend_from_slice(&["--subnet", s]);
    }
    lab.rete_ok(&args);
    let mut args = vec!["create", "web", "--network", "pub"];
    for p in publish {
        args.extend_from_slice(&["-p", p]);
    }
    lab.rete_ok(&args);
    lab.rete_ok(&["create", "peer", "--network", "pub"]);
    Setup {
        web_ns: lab.container_ns("web"),
        web4: lab.addr_of("web", "pub", false),
        web6: (subnets.len() > 1).then(|| lab.addr_of("web", "pub", true)),
        peer_ns: lab.container_ns("peer"),
    }
}

fn teardown(lab: &Lab) {
    lab.rete_ok(&["rm", "web", "peer"]);
    lab.rete_ok(&["network", "rm", "pub"]);
    assert_no_residue(lab);
}

/// A client: a label for messages, where it runs, the address it dials.
type Client = (&'static str, PathBuf, IpAddr);

/// Every client a port published on all IPv4 addresses must answer.
fn clients_any4(lab: &Lab, s: &Setup) -> Vec<Client> {
    let mut c = clients_on(lab, s, ip(UPLINK_HOST));
    c.push(("host via 127.0.0.1", lab.host.clone(), ip("127.0.0.1")));
    c
}

/// The clients that dial the host address `addr`: the outside, the host
/// itself, the publisher (hairpin) and its neighbour.
fn clients_on(lab: &Lab, s: &Setup, addr: IpAddr) -> Vec<Client> {
    vec![
        ("outside", lab.outside.clone(), addr),
        ("host itself", lab.host.clone(), addr),
        ("publisher (hairpin)", s.web_ns.clone(), addr),
        ("neighbour", s.peer_ns.clone(), addr),
    ]
}

/// Starts a server in the container on `target:cport`, checks that no
/// client in `silent` gets an answer on `hport` while it listens (so a wrong
/// DNAT would show), then that each client in `answer` gets its answer. The
/// outside client must arrive with its own address (published ports do not
/// masquerade inbound).
fn check_port(
    s: &Setup,
    target: IpAddr,
    proto: Proto,
    hport: u16,
    cport: u16,
    answer: &[Client],
    silent: &[Client],
) {
    let tag = format!("web-{cport}");
    let n = answer.len() + silent.len();
    let _srv = match proto {
        Proto::Tcp => Server::tcp(&s.web_ns, target, cport, &tag, n),
        Proto::Udp => Server::udp(&s.web_ns, target, cport, &tag, n * 3),
    };
    let get = |ns: &PathBuf, dst: IpAddr| match proto {
        Proto::Tcp => tcp_get(ns, dst, hport),
        Proto::Udp => udp_get(ns, dst, hport),
    };
    for (label, ns, dst) in silent {
        assert_eq!(get(ns, *dst), None, "{label} must not reach {dst}:{hport}");
    }
    for (label, ns, dst) in answer {
        let got = get(ns, *dst).unwrap_or_else(|| {
            panic!("{proto:?} {dst} port {hport} (-> {cport}) did not answer the {label}")
        });
        assert!(
            got.starts_with(&format!("{tag} ")),
            "{label} got {got:?} from {dst}:{hport}"
        );
        if *label == "outside" {
            let own = if dst.is_ipv4() {
                UPLINK_OUTSIDE
            } else {
                UPLINK_OUTSIDE6
            };
            assert_eq!(got, format!("{tag} {own}"), "the outside keeps its address");
        }
    }
}

/// [`check_port`] with only answering clients.
fn assert_answers(
    s: &Setup,
    target: IpAddr,
    proto: Proto,
    hport: u16,
    cport: u16,
    clients: &[Client],
) {
    check_port(s, target, proto, hport, cport, clients, &[]);
}

/// `rete port NAME --format json`.
fn ports(lab: &Lab, name: &str) -> Vec<serde_json::Value> {
    let out = lab.rete_ok(&["port", name, "--format", "json"]);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The host port `cport/proto` is published on at `host_ip`, from
/// `rete port`.
fn host_port(lab: &Lab, name: &str, cport: u16, proto: &str, host_ip: &str) -> u16 {
    let p = ports(lab, name)
        .into_iter()
        .find(|m| m["container_port"] == cport && m["protocol"] == proto && m["host_ip"] == host_ip)
        .unwrap_or_else(|| panic!("{cport}/{proto} on {host_ip} not in rete port {name}"));
    p["host_port"].as_u64().unwrap() as u16
}

#[test]
fn container_port_only_picks_a_host_port() {
    require_root!();
    let lab = Lab::new("pub-cport");
    let s = setup(&lab, &["10.73.1.0/24"], &["80", "53/udp"]);
    let hport = host_port(&lab, "web", 80, "tcp", "0.0.0.0");
    let uport = host_port(&lab, "web", 53, "udp", "0.0.0.0");
    for p in [hport, uport] {
        assert!((32768..=60999).contains(&p), "picked {p}");
    }
    // The table form of `rete port` and inspect agree.
    let table = lab.rete_ok(&["port", "web"]);
    assert!(
        table.contains(&format!("80/tcp -> 0.0.0.0:{hport}")),
        "{table}"
    );
    assert!(
        table.contains(&format!("53/udp -> 0.0.0.0:{uport}")),
        "{table}"
    );
    let c = lab.inspect("web");
    assert!(
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["host_port"] == hport && m["container_port"] == 80),
        "{c}"
    );
    assert_answers(&s, s.web4, Proto::Tcp, hport, 80, &clients_any4(&lab, &s));
    assert_answers(&s, s.web4, Proto::Udp, uport, 53, &clients_any4(&lab, &s));

    // A second container asking the same gets a different host port.
    lab.rete_ok(&["create", "web2", "--network", "pub", "-p", "80"]);
    let hport2 = host_port(&lab, "web2", 80, "tcp", "0.0.0.0");
    assert_ne!(hport, hport2);
    lab.rete_ok(&["rm", "web2"]);
    teardown(&lab);
}

#[test]
fn host_port_to_container_port() {
    require_root!();
    let lab = Lab::new("pub-hport");
    let s = setup(&lab, &["10.73.2.0/24"], &["8080:80", "8080:80/udp"]);
    let table = lab.rete_ok(&["port", "web"]);
    assert!(table.contains("80/tcp -> 0.0.0.0:8080"), "{table}");
    assert!(table.contains("80/udp -> 0.0.0.0:8080"), "{table}");
    assert_answers(&s, s.web4, Proto::Tcp, 8080, 80, &clients_any4(&lab, &s));
    assert_answers(&s, s.web4, Proto::Udp, 8080, 80, &clients_any4(&lab, &s));
    // The hairpinned connection arrives from the gateway (masqueraded), so
    // the container's reply goes back through the host.
    let _srv = Server::tcp(&s.web_ns, s.web4, 80, "web-80", 1);
    let got = tcp_get(&s.web_ns, ip(UPLINK_HOST), 8080).unwrap();
    assert_eq!(got, "web-80 10.73.2.1");
    teardown(&lab);
}

#[test]
fn host_address_with_picked_port() {
    require_root!();
    let lab = Lab::new("pub-ip-cport");
    let s = setup(
        &lab,
        &["10.73.3.0/24"],
        &["192.0.2.1::81", "192.0.2.1::81/udp"],
    );
    let hport = host_port(&lab, "web", 81, "tcp", UPLINK_HOST);
    let uport = host_port(&lab, "web", 81, "udp", UPLINK_HOST);
    assert!((32768..=60999).contains(&hport), "picked {hport}");
    let table = lab.rete_ok(&["port", "web"]);
    assert!(
        table.contains(&format!("81/tcp -> 192.0.2.1:{hport}")),
        "{table}"
    );
    // Only 192.0.2.1: not 127.0.0.1.
    let lo = [("host via 127.0.0.1", lab.host.clone(), ip("127.0.0.1"))];
    let clients = clients_on(&lab, &s, ip(UPLINK_HOST));
    check_port(&s, s.web4, Proto::Tcp, hport, 81, &clients, &lo);
    check_port(&s, s.web4, Proto::Udp, uport, 81, &clients, &lo);
    teardown(&lab);
}

#[test]
fn host_address_host_port_container_port() {
    require_root!();
    let lab = Lab::new("pub-ip-hport");
    let s = setup(
        &lab,
        &["10.73.4.0/24"],
        &[
            "192.0.2.1:8082:82",
            "192.0.2.1:8082:82/udp",
            "127.0.0.1:8083:83",
        ],
    );
    let table = lab.rete_ok(&["port", "web"]);
    assert!(table.contains("82/tcp -> 192.0.2.1:8082"), "{table}");
    assert!(table.contains("82/udp -> 192.0.2.1:8082"), "{table}");
    assert!(table.contains("83/tcp -> 127.0.0.1:8083"), "{table}");
    let lo = [("host via 127.0.0.1", lab.host.clone(), ip("127.0.0.1"))];
    let clients = clients_on(&lab, &s, ip(UPLINK_HOST));
    check_port(&s, s.web4, Proto::Tcp, 8082, 82, &clients, &lo);
    check_port(&s, s.web4, Proto::Udp, 8082, 82, &clients, &lo);
    // Published on 127.0.0.1 only: the host's loopback answers, the
    // uplink address does not.
    let outside = [("outside", lab.outside.clone(), ip(UPLINK_HOST))];
    check_port(&s, s.web4, Proto::Tcp, 8083, 83, &lo, &outside);
    teardown(&lab);
}

#[test]
fn port_ranges_map_one_to_one() {
    require_root!();
    let lab = Lab::new("pub-range");
    let s = setup(
        &lab,
        &["10.73.5.0/24"],
        &["8000-8002:80-82", "9000-9001:90-91/udp"],
    );
    let table = lab.rete_ok(&["port", "web"]);
    for (h, c) in [(8000, 80), (8001, 81), (8002, 82)] {
        assert!(
            table.contains(&format!("{c}/tcp -> 0.0.0.0:{h}")),
            "{table}"
        );
    }
    for (h, c) in [(9000, 90), (9001, 91)] {
        assert!(
            table.contains(&format!("{c}/udp -> 0.0.0.0:{h}")),
            "{table}"
        );
    }
    for (h, c) in [(8000, 80), (8001, 81), (8002, 82)] {
        assert_answers(&s, s.web4, Proto::Tcp, h, c, &clients_any4(&lab, &s));
    }
    for (h, c) in [(9000, 90), (9001, 91)] {
        assert_answers(&s, s.web4, Proto::Udp, h, c, &clients_any4(&lab, &s));
    }
    teardown(&lab);
}

#[test]
fn sctp_mapping_is_accepted_and_shown() {
    require_root!();
    let lab = Lab::new("pub-sctp");
    // This kernel has no SCTP sockets (socket(AF_INET, SOCK_STREAM,
    // IPPROTO_SCTP) fails with EPROTONOSUPPORT), so no SCTP traffic can be
    // exchanged: only check that the mapping is accepted, shown by
    // `rete port`, and programmed into the firewall.
    let _s = setup(&lab, &["10.73.6.0/24"], &["9132:132/sctp", "133/sctp"]);
    let table = lab.rete_ok(&["port", "web"]);
    assert!(table.contains("132/sctp -> 0.0.0.0:9132"), "{table}");
    let picked = host_port(&lab, "web", 133, "sctp", "0.0.0.0");
    assert!(
        table.contains(&format!("133/sctp -> 0.0.0.0:{picked}")),
        "{table}"
    );
    let nft = lab.nft();
    assert!(nft.contains("sctp . 9132"), "{nft}");
    assert!(nft.contains(&format!("sctp . {picked}")), "{nft}");
    // The same number over TCP is a different claim.
    lab.rete_ok(&["create", "tcp", "--network", "pub", "-p", "9132:132"]);
    lab.rete_ok(&["rm", "tcp"]);
    teardown(&lab);
}

#[test]
fn ipv6_host_address_in_brackets_on_a_dual_stack_network() {
    require_root!();
    let lab = Lab::new("pub-v6");
    let s = setup(
        &lab,
        &["10.73.7.0/24", "fd00:73:7::/64"],
        &[
            "[2001:db8:ff::1]:8080:80",
            "[2001:db8:ff::1]:8080:80/udp",
            "8081:81",
        ],
    );
    let web6 = s.web6.unwrap();
    let table = lab.rete_ok(&["port", "web"]);
    assert!(table.contains("80/tcp -> [2001:db8:ff::1]:8080"), "{table}");
    assert!(table.contains("80/udp -> [2001:db8:ff::1]:8080"), "{table}");
    // A port without an address is published on both families.
    assert!(table.contains("81/tcp -> 0.0.0.0:8081"), "{table}");
    assert!(table.contains("81/tcp -> [::]:8081"), "{table}");

    // 8080 is published on the IPv6 address only, not over IPv4.
    let v4 = [("outside over IPv4", lab.outside.clone(), ip(UPLINK_HOST))];
    let clients6 = clients_on(&lab, &s, ip(UPLINK_HOST6));
    check_port(&s, web6, Proto::Tcp, 8080, 80, &clients6, &[]);
    check_port(&s, web6, Proto::Udp, 8080, 80, &clients6, &[]);
    check_port(&s, s.web4, Proto::Tcp, 8080, 80, &[], &v4);
    // 8081 answers on both families.
    assert_answers(&s, s.web4, Proto::Tcp, 8081, 81, &clients_any4(&lab, &s));
    assert_answers(&s, web6, Proto::Tcp, 8081, 81, &clients6);
    // The IPv6 address needs an IPv6 subnet on the container.
    lab.rete_ok(&["network", "create", "v4only", "--subnet", "10.73.17.0/24"]);
    let err = lab.rete_err(&[
        "create",
        "x",
        "--network",
        "v4only",
        "-p",
        "[2001:db8:ff::1]:8090:80",
    ]);
    assert!(err.contains("has no IPv6 address"), "{err}");
    lab.rete_ok(&["network", "rm", "v4only"]);
    teardown(&lab);
}

#[test]
fn a_second_claim_is_refused_naming_the_holder() {
    require_root!();
    let lab = Lab::new("pub-clash");
    let _s = setup(
        &lab,
        &["10.73.8.0/24"],
        &["8080:80", "192.0.2.1:8081:81/udp"],
    );
    let links_before = lab.host_links();
    for (spec, what) in [
        ("8080:80", "0.0.0.0:8080/tcp"),
        // A specific address clashes with a claim on every address...
        ("192.0.2.1:8080:80", "192.0.2.1:8080/tcp"),
        // ...and the other way round.
        ("8081:81/udp", "0.0.0.0:8081/udp"),
        ("192.0.2.1:8081:99/udp", "192.0.2.1:8081/udp"),
    ] {
        let out = lab.rete(&["create", "thief", "--network", "pub", "-p", spec]);
        assert_eq!(out.status.code(), Some(4), "{spec}: conflict exit status");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "host port {what} is already published by container \"web\""
            )),
            "{spec}: {err}"
        );
        // The refused container left nothing behind.
        let ls = lab.rete_ok(&["ls", "-q"]);
        assert!(!ls.lines().any(|l| l == "thief"), "{ls}");
        assert_eq!(lab.host_links(), links_before, "{spec}");
    }
    // Other protocols and other addresses are separate claims.
    lab.rete_ok(&[
        "create",
        "ok1",
        "--network",
        "pub",
        "-p",
        "8080:80/udp",
        "-p",
        "127.0.0.1:8081:81",
    ]);
    // A port published twice in one request is refused too.
    let err = lab.rete_err(&[
        "create",
        "twice",
        "--network",
        "pub",
        "-p",
        "7000:70",
        "-p",
        "7000:71",
    ]);
    assert!(err.contains("published twice"), "{err}");
    lab.rete_ok(&["rm", "ok1"]);
    teardown(&lab);
}

#[test]
fn removed_containers_ports_stop_answering_and_are_free_again() {
    require_root!();
    let lab = Lab::new("pub-rm");
    let s = setup(&lab, &["10.73.9.0/24"], &["8080:80", "8080:80/udp"]);
    let outside = ("outside", lab.outside.clone(), ip(UPLINK_HOST));
    assert_answers(
        &s,
        s.web4,
        Proto::Tcp,
        8080,
        80,
        std::slice::from_ref(&outside),
    );
    assert_answers(
        &s,
        s.web4,
        Proto::Udp,
        8080,
        80,
        std::slice::from_ref(&outside),
    );

    lab.rete_ok(&["rm", "web"]);
    assert_eq!(tcp_get(&lab.outside, ip(UPLINK_HOST), 8080), None);
    assert_eq!(udp_get(&lab.outside, ip(UPLINK_HOST), 8080), None);
    assert_eq!(tcp_get(&lab.host, ip("127.0.0.1"), 8080), None);
    assert!(!lab.nft().contains("8080"), "{}", lab.nft());
    let err = lab.rete_err(&["port", "web"]);
    assert!(err.contains("not found"), "{err}");

    // The port is free again: a new container takes it and answers.
    lab.rete_ok(&["create", "web", "--network", "pub", "-p", "8080:80"]);
    let s2 = Setup {
        web_ns: lab.container_ns("web"),
        web4: lab.addr_of("web", "pub", false),
        web6: None,
        peer_ns: s.peer_ns.clone(),
    };
    assert_answers(&s2, s2.web4, Proto::Tcp, 8080, 80, &[outside]);
    teardown(&lab);
}
