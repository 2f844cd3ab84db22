//! Dual stack: a network with an IPv4 and an IPv6 subnet gives containers
//! both, with default routes for both, IPv6 between containers, and
//! masqueraded IPv6 egress to the outside. IPv6-only networks work alone.

mod common;

use std::net::IpAddr;

use common::*;

fn exec(lab: &Lab, name: &str, argv: &[&str]) -> String {
    let mut args = vec!["exec", name, "--"];
    args.extend_from_slice(argv);
    lab.rete_ok(&args)
}

#[test]
fn dual_stack_containers_get_both_families_and_talk_over_ipv6() {
    require_root!();
    let lab = Lab::new("ds-basic");
    lab.rete_ok(&[
        "network",
        "create",
        "ds",
        "--subnet",
        "10.74.0.0/24",
        "--subnet",
        "fd00:74::/64",
    ]);
    let net: serde_json::Value =
        serde_json::from_str(&lab.rete_ok(&["network", "inspect", "ds"])).unwrap();
    let gws: Vec<&str> = net[0]["subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["gateway"].as_str().unwrap())
        .collect();
    assert_eq!(gws, ["10.74.0.1", "fd00:74::1"]);

    lab.rete_ok(&["create", "a", "--network", "ds"]);
    lab.rete_ok(&["create", "b", "--network", "ds"]);
    let a4 = lab.addr_of("a", "ds", false);
    let a6 = lab.addr_of("a", "ds", true);
    let b6 = lab.addr_of("b", "ds", true);
    assert!(a4.to_string().starts_with("10.74.0."), "{a4}");
    assert!(a6.to_string().starts_with("fd00:74::"), "{a6}");

    // Both addresses on eth0, as the kernel reports them.
    let v4 = exec(&lab, "a", &["ip", "-o", "-4", "addr", "show", "eth0"]);
    let v6 = exec(&lab, "a", &["ip", "-o", "-6", "addr", "show", "eth0"]);
    assert!(v4.contains(&format!("inet {a4}/24")), "{v4}");
    let global = v6
        .lines()
        .find(|l| l.contains(&format!("inet6 {a6}/64 scope global")))
        .unwrap_or_else(|| panic!("{a6} on eth0: {v6}"));
    // rete's address skips duplicate address detection: usable at once.
    assert!(!global.contains("tentative"), "{global}");
    assert!(!global.contains("dadfailed"), "{global}");
    // Default routes for both families.
    let r4 = exec(&lab, "a", &["ip", "-4", "route", "show", "default"]);
    let r6 = exec(&lab, "a", &["ip", "-6", "route", "show", "default"]);
    assert!(r4.starts_with("default via 10.74.0.1 dev eth0"), "{r4}");
    assert!(r6.starts_with("default via fd00:74::1 dev eth0"), "{r6}");
    let c = lab.inspect("a");
    assert_eq!(
        c["endpoints"][0]["gateways"],
        serde_json::json!(["10.74.0.1", "fd00:74::1"])
    );

    // IPv6 between containers: ping, TCP and UDP, addresses unchanged.
    let (a_ns, b_ns) = (lab.container_ns("a"), lab.container_ns("b"));
    assert!(ping(&a_ns, b6), "a pings b over IPv6");
    assert!(ping(&b_ns, a6), "b pings a over IPv6");
    assert!(ping(&a_ns, "fd00:74::1".parse().unwrap()), "the v6 gateway");
    {
        let _srv = Server::tcp(&b_ns, b6, 6000, "b6", 1);
        assert_eq!(tcp_get(&a_ns, b6, 6000), Some(format!("b6 {a6}")));
    }
    {
        let _srv = Server::udp(&b_ns, b6, 6001, "b6u", 3);
        assert_eq!(udp_get(&a_ns, b6, 6001), Some(format!("b6u {a6}")));
    }
    // The host reaches containers over IPv6 too.
    assert!(ping(&lab.host, a6));

    lab.rete_ok(&["rm", "a", "b"]);
    lab.rete_ok(&["network", "rm", "ds"]);
    assert_no_residue(&lab);
}

#[test]
fn ipv6_egress_reaches_the_outside_masqueraded() {
    require_root!();
    let lab = Lab::new("ds-egress");
    lab.rete_ok(&[
        "network",
        "create",
        "ds",
        "--subnet",
        "10.74.1.0/24",
        "--subnet",
        "fd00:74:1::/64",
    ]);
    lab.rete_ok(&["create", "a", "--network", "ds"]);
    let ns = lab.container_ns("a");
    let out6: IpAddr = UPLINK_OUTSIDE6.parse().unwrap();
    let out4: IpAddr = UPLINK_OUTSIDE.parse().unwrap();

    assert!(ping(&ns, out6), "ping the outside over IPv6");
    // The outside sees the host's IPv6 uplink address: it has no route to
    // fd00:74:1::/64, so only masquerade lets it answer.
    {
        let _srv = Server::tcp(&lab.outside, out6, 6100, "o6", 1);
        assert_eq!(tcp_get(&ns, out6, 6100), Some(format!("o6 {UPLINK_HOST6}")));
    }
    {
        let _srv = Server::udp(&lab.outside, out6, 6101, "o6u", 3);
        assert_eq!(
            udp_get(&ns, out6, 6101),
            Some(format!("o6u {UPLINK_HOST6}"))
        );
    }
    // IPv4 egress works alongside.
    {
        let _srv = Server::tcp(&lab.outside, out4, 6102, "o4", 1);
        assert_eq!(tcp_get(&ns, out4, 6102), Some(format!("o4 {UPLINK_HOST}")));
    }

    lab.rete_ok(&["rm", "a"]);
    lab.rete_ok(&["network", "rm", "ds"]);
    assert_no_residue(&lab);
}

#[test]
fn ipv6_respects_network_isolation() {
    require_root!();
    let lab = Lab::new("ds-isolation");
    lab.rete_ok(&[
        "network",
        "create",
        "one",
        "--subnet",
        "10.74.2.0/24",
        "--subnet",
        "fd00:74:2::/64",
    ]);
    lab.rete_ok(&[
        "network",
        "create",
        "two",
        "--subnet",
        "10.74.3.0/24",
        "--subnet",
        "fd00:74:3::/64",
    ]);
    lab.rete_ok(&["create", "a", "--network", "one"]);
    lab.rete_ok(&["create", "b", "--network", "two"]);
    let (a_ns, b_ns) = (lab.container_ns("a"), lab.container_ns("b"));
    let a6 = lab.addr_of("a", "one", true);
    let b6 = lab.addr_of("b", "two", true);
    // Both reach the outside over IPv6, so routing works...
    assert!(ping(&a_ns, UPLINK_OUTSIDE6.parse().unwrap()));
    assert!(ping(&b_ns, UPLINK_OUTSIDE6.parse().unwrap()));
    // ...but not each other.
    assert!(!ping_once(&a_ns, b6), "one -> two over IPv6");
    assert!(!ping_once(&b_ns, a6), "two -> one over IPv6");
    let _srv = Server::tcp(&b_ns, b6, 6200, "b", 1);
    assert_eq!(tcp_get(&a_ns, b6, 6200), None);

    drop(_srv);
    lab.rete_ok(&["rm", "a", "b"]);
    lab.rete_ok(&["network", "rm", "one", "two"]);
    assert_no_residue(&lab);
}

#[test]
fn ipv6_only_network() {
    require_root!();
    let lab = Lab::new("ds-v6only");
    lab.rete_ok(&["network", "create", "six", "--subnet", "fd00:74:4::/64"]);
    lab.rete_ok(&["create", "a", "--network", "six"]);
    lab.rete_ok(&["create", "b", "--network", "six"]);
    let a6 = lab.addr_of("a", "six", true);
    let b6 = lab.addr_of("b", "six", true);
    let v4 = exec(&lab, "a", &["ip", "-o", "-4", "addr", "show", "eth0"]);
    assert_eq!(v4.trim(), "", "no IPv4 address: {v4}");
    let r6 = exec(&lab, "a", &["ip", "-6", "route", "show", "default"]);
    assert!(r6.starts_with("default via fd00:74:4::1 dev eth0"), "{r6}");
    let r4 = exec(&lab, "a", &["ip", "-4", "route", "show", "default"]);
    assert_eq!(r4.trim(), "", "no IPv4 default route: {r4}");
    let (a_ns, b_ns) = (lab.container_ns("a"), lab.container_ns("b"));
    assert!(ping(&a_ns, b6));
    assert!(ping(&b_ns, a6));
    let out6: IpAddr = UPLINK_OUTSIDE6.parse().unwrap();
    {
        let _srv = Server::tcp(&lab.outside, out6, 6300, "o6", 1);
        assert_eq!(
            tcp_get(&a_ns, out6, 6300),
            Some(format!("o6 {UPLINK_HOST6}"))
        );
    }
    // A published port on an IPv6-only container lives on [::] only.
    lab.rete_ok(&["create", "web", "--network", "six", "-p", "8080:80"]);
    let ports = lab.rete_ok(&["port", "web"]);
    assert_eq!(ports.trim(), "80/tcp -> [::]:8080", "{ports}");
    let web6 = lab.addr_of("web", "six", true);
    let _srv = Server::tcp(&lab.container_ns("web"), web6, 80, "w", 2);
    let host6: IpAddr = UPLINK_HOST6.parse().unwrap();
    let got = tcp_get(&lab.outside, host6, 8080).expect("answers over IPv6");
    assert_eq!(got, format!("w {UPLINK_OUTSIDE6}"));
    let got = tcp_get(&b_ns, host6, 8080).expect("answers a neighbour over IPv6");
    assert!(got.starts_with("w "), "{got}");

    lab.rete_ok(&["rm", "a", "b", "web"]);
    lab.rete_ok(&["network", "rm", "six"]);
    assert_no_residue(&lab);
}

/// An interface on an IPv4-only network has no IPv6 link-local address (so
/// it sends no IPv6 probes, reports or solicitations for its bridge to
/// flood to every container); on a network with IPv6 it has one, as NDP
/// wants. Host ends of veths never have one.
#[test]
fn ipv6_link_local_only_where_the_network_has_ipv6() {
    require_root!();
    let lab = Lab::new("ds-linklocal");
    lab.rete_ok(&["network", "create", "v4", "--subnet", "10.75.0.0/24"]);
    lab.rete_ok(&[
        "network",
        "create",
        "ds",
        "--subnet",
        "10.76.0.0/24",
        "--subnet",
        "fd00:76::/64",
    ]);
    lab.rete_ok(&["create", "a", "--network", "v4"]);
    lab.rete_ok(&["create", "b", "--network", "ds"]);
    let a = sh_in(&lab.container_ns("a"), "ip -6 -o addr show dev eth0");
    assert!(!a.contains("fe80"), "IPv4-only: no link-local: {a}");
    let b = sh_in(&lab.container_ns("b"), "ip -6 -o addr show dev eth0");
    assert!(b.contains("fe80") && b.contains("fd00:76::"), "{b}");
    for veth in lab.links_named("rete-") {
        let addrs = lab.sh_host(&format!("ip -6 -o addr show dev {veth}"));
        assert!(addrs.trim().is_empty(), "host end {veth}: {addrs}");
    }
    // IPv4 still flows on the IPv4-only network.
    lab.rete_ok(&["create", "c", "--network", "v4"]);
    assert!(ping(&lab.container_ns("a"), lab.addr_of("c", "v4", false)));
    lab.rete_ok(&["rm", "a", "b", "c"]);
    lab.rete_ok(&["network", "rm", "v4", "ds"]);
    assert_no_residue(&lab);
}
