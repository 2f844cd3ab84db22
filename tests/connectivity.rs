//! Who reaches whom: containers on one network, across networks (isolated by
//! default, or not with `-o isolate=false`), a container on two networks,
//! internal networks, and masqueraded egress to the outside.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use common::*;

/// A container on `network`: its namespace and IPv4 address.
fn container(lab: &Lab, name: &str, network: &str) -> (PathBuf, IpAddr) {
    lab.rete_ok(&["create", name, "--network", network]);
    (lab.container_ns(name), lab.addr_of(name, network, false))
}

/// Whether a TCP server in `to_ns` on `to:port` answers a client in
/// `from_ns`; the answer must carry the client's address as seen by the
/// server, returned.
fn tcp_reaches(from_ns: &Path, to_ns: &Path, to: IpAddr, port: u16) -> Option<String> {
    let _srv = Server::tcp(to_ns, to, port, "hi", 1);
    tcp_get(from_ns, to, port).map(|got| got.strip_prefix("hi ").expect("server reply").to_string())
}

#[test]
fn containers_on_one_network_reach_each_other() {
    require_root!();
    let lab = Lab::new("conn-same");
    lab.rete_ok(&["network", "create", "lan", "--subnet", "10.72.0.0/24"]);
    let (a_ns, a) = container(&lab, "a", "lan");
    let (b_ns, b) = container(&lab, "b", "lan");
    assert!(ping(&a_ns, b), "a pings b");
    assert!(ping(&b_ns, a), "b pings a");
    // Switched traffic arrives with the sender's own address.
    assert_eq!(tcp_reaches(&a_ns, &b_ns, b, 5000), Some(a.to_string()));
    assert_eq!(tcp_reaches(&b_ns, &a_ns, a, 5001), Some(b.to_string()));
    let _udp = Server::udp(&b_ns, b, 5002, "u", 1);
    assert_eq!(udp_get(&a_ns, b, 5002), Some(format!("u {a}")));

    lab.rete_ok(&["rm", "a", "b"]);
    lab.rete_ok(&["network", "rm", "lan"]);
    assert_no_residue(&lab);
}

#[test]
fn isolated_networks_do_not_reach_each_other_but_a_container_on_both_does() {
    require_root!();
    let lab = Lab::new("conn-isolated");
    lab.rete_ok(&["network", "create", "red", "--subnet", "10.72.1.0/24"]);
    lab.rete_ok(&["network", "create", "blue", "--subnet", "10.72.2.0/24"]);
    let (r_ns, r) = container(&lab, "r", "red");
    let (b_ns, b) = container(&lab, "b", "blue");
    lab.rete_ok(&["create", "both", "--network", "red", "--network", "blue"]);
    let both_ns = lab.container_ns("both");
    let both_r = lab.addr_of("both", "red", false);
    let both_b = lab.addr_of("both", "blue", false);

    // red -> blue and blue -> red: nothing, by ping or TCP.
    assert!(!ping_once(&r_ns, b), "red must not reach blue");
    assert!(!ping_once(&b_ns, r), "blue must not reach red");
    assert_eq!(tcp_reaches(&r_ns, &b_ns, b, 5100), None, "red -> blue tcp");
    assert_eq!(tcp_reaches(&b_ns, &r_ns, r, 5101), None, "blue -> red tcp");
    // Also not through the other network's address of the dual-homed one.
    assert!(
        !ping_once(&r_ns, both_b),
        "red must not reach both's blue side"
    );

    // The container on both networks reaches each, and each reaches it.
    assert!(ping(&both_ns, r), "both -> red");
    assert!(ping(&both_ns, b), "both -> blue");
    assert_eq!(
        tcp_reaches(&both_ns, &r_ns, r, 5102),
        Some(both_r.to_string())
    );
    assert_eq!(
        tcp_reaches(&both_ns, &b_ns, b, 5103),
        Some(both_b.to_string())
    );
    assert_eq!(
        tcp_reaches(&r_ns, &both_ns, both_r, 5104),
        Some(r.to_string())
    );
    assert_eq!(
        tcp_reaches(&b_ns, &both_ns, both_b, 5105),
        Some(b.to_string())
    );

    lab.rete_ok(&["rm", "r", "b", "both"]);
    lab.rete_ok(&["network", "rm", "red", "blue"]);
    assert_no_residue(&lab);
}

#[test]
fn networks_with_isolate_false_reach_each_other() {
    require_root!();
    let lab = Lab::new("conn-open");
    for (name, subnet) in [("east", "10.72.3.0/24"), ("west", "10.72.4.0/24")] {
        lab.rete_ok(&[
            "network",
            "create",
            name,
            "--subnet",
            subnet,
            "-o",
            "isolate=false",
        ]);
    }
    // A default (isolated) network next to them.
    lab.rete_ok(&["network", "create", "closed", "--subnet", "10.72.5.0/24"]);
    let (e_ns, e) = container(&lab, "e", "east");
    let (w_ns, w) = container(&lab, "w", "west");
    let (c_ns, c) = container(&lab, "c", "closed");

    assert!(ping(&e_ns, w), "east -> west");
    assert!(ping(&w_ns, e), "west -> east");
    // Routed between bridges without NAT: the peer address is the sender's.
    assert_eq!(tcp_reaches(&e_ns, &w_ns, w, 5200), Some(e.to_string()));
    assert_eq!(tcp_reaches(&w_ns, &e_ns, e, 5201), Some(w.to_string()));
    // An isolated network stays apart from open ones, both ways.
    assert!(!ping_once(&e_ns, c), "east -> closed");
    assert!(!ping_once(&c_ns, e), "closed -> east");
    assert_eq!(tcp_reaches(&c_ns, &w_ns, w, 5202), None, "closed -> west");

    lab.rete_ok(&["rm", "e", "w", "c"]);
    lab.rete_ok(&["network", "rm", "east", "west", "closed"]);
    assert_no_residue(&lab);
}

#[test]
fn internal_network_reaches_its_members_and_gateway_but_not_outside() {
    require_root!();
    let lab = Lab::new("conn-internal");
    lab.rete_ok(&[
        "network",
        "create",
        "vault",
        "--subnet",
        "10.72.6.0/24",
        "--internal",
    ]);
    let (a_ns, a) = container(&lab, "a", "vault");
    let (b_ns, b) = container(&lab, "b", "vault");
    let gw: IpAddr = "10.72.6.1".parse().unwrap();
    let outside: IpAddr = UPLINK_OUTSIDE.parse().unwrap();

    assert!(ping(&a_ns, b), "members reach each other");
    assert_eq!(tcp_reaches(&b_ns, &a_ns, a, 5300), Some(b.to_string()));
    assert!(ping(&a_ns, gw), "the gateway answers");
    // No default route, so nothing beyond the bridge's subnet.
    let routes = sh_in(&a_ns, "ip route show default");
    assert_eq!(routes.trim(), "", "internal networks get no default route");
    assert!(!ping_once(&a_ns, outside), "the outside is out of reach");
    assert_eq!(tcp_reaches(&a_ns, &lab.outside, outside, 5301), None);
    // Even with a route added by hand, the firewall drops routed traffic.
    sh_in(&a_ns, "ip route add default via 10.72.6.1");
    assert!(
        !ping_once(&a_ns, outside),
        "internal traffic is not forwarded"
    );
    assert_eq!(tcp_reaches(&a_ns, &lab.outside, outside, 5302), None);
    // And the outside cannot get in either (with a route to the subnet).
    sh_in(&lab.outside, "ip route add 10.72.6.0/24 via 192.0.2.1");
    assert!(!ping_once(&lab.outside, a), "outside -> internal");

    lab.rete_ok(&["rm", "a", "b"]);
    lab.rete_ok(&["network", "rm", "vault"]);
    assert_no_residue(&lab);
}

#[test]
fn egress_reaches_the_outside_masqueraded_to_the_uplink_address() {
    require_root!();
    let lab = Lab::new("conn-egress");
    lab.rete_ok(&["network", "create", "out", "--subnet", "10.72.7.0/24"]);
    let (a_ns, _a) = container(&lab, "a", "out");
    let outside: IpAddr = UPLINK_OUTSIDE.parse().unwrap();

    assert!(ping(&a_ns, outside), "ping the outside");
    // The outside server sees the host's uplink address, not 10.72.7.x.
    assert_eq!(
        tcp_reaches(&a_ns, &lab.outside, outside, 5400),
        Some(UPLINK_HOST.to_string())
    );
    let _udp = Server::udp(&lab.outside, outside, 5401, "u", 1);
    assert_eq!(
        udp_get(&a_ns, outside, 5401),
        Some(format!("u {UPLINK_HOST}"))
    );

    // Without masquerade the outside could not answer: it has no route to
    // 10.72.7.0/24. Once the network is gone, so is egress.
    lab.rete_ok(&["rm", "a"]);
    lab.rete_ok(&["network", "rm", "out"]);
    assert_no_residue(&lab);
}

#[test]
fn removing_a_container_keeps_its_neighbours_connected() {
    require_root!();
    let lab = Lab::new("conn-bridge-mac");
    lab.rete_ok(&["network", "create", "lan", "--subnet", "10.72.8.0/24"]);
    let bridge = lab.bridge_of("lan");
    let mac_of_bridge = || {
        let link = lab.sh_host(&format!("ip -o link show {bridge}"));
        let mac = link.split("link/ether ").nth(1).expect("a MAC");
        mac.split(' ').next().unwrap().to_string()
    };
    let mac = mac_of_bridge();
    let outside: IpAddr = UPLINK_OUTSIDE.parse().unwrap();
    let names = ["k", "x1", "x2", "x3", "x4"];
    for n in names {
        lab.rete_ok(&["create", n, "--network", "lan"]);
    }
    let k_ns = lab.container_ns("k");
    assert_eq!(
        tcp_reaches(&k_ns, &lab.outside, outside, 5500),
        Some(UPLINK_HOST.to_string())
    );
    // Containers coming and going do not change the gateway's MAC (a bridge
    // without a MAC of its own takes its lowest port's), so the one "k" has
    // cached stays right and its traffic keeps flowing.
    for (i, n) in names[1..].iter().enumerate() {
        lab.rete_ok(&["rm", n]);
        assert_eq!(mac_of_bridge(), mac, "bridge MAC after removing {n}");
        assert_eq!(
            tcp_reaches(&k_ns, &lab.outside, outside, 5501 + i as u16),
            Some(UPLINK_HOST.to_string()),
            "k's egress after removing {n}"
        );
    }
    lab.rete_ok(&["rm", "k"]);
    lab.rete_ok(&["network", "rm", "lan"]);
    assert_no_residue(&lab);
}

#[test]
fn a_replaced_container_is_reachable_at_once_on_its_old_address() {
    require_root!();
    let lab = Lab::new("conn-reuse");
    lab.rete_ok(&["network", "create", "lan", "--subnet", "10.72.9.0/24"]);
    let (a_ns, a) = container(&lab, "a", "lan");
    let (b_ns, b) = container(&lab, "b", "lan");
    // The host and a learn b's MAC.
    assert_eq!(tcp_reaches(&a_ns, &b_ns, b, 5600), Some(a.to_string()));
    assert_eq!(
        tcp_reaches(&lab.host, &b_ns, b, 5601),
        Some("10.72.9.1".into())
    );
    lab.rete_ok(&["rm", "b"]);
    // A new container takes the freed address; those who cached the old
    // one's MAC must still reach it without waiting for ARP to expire.
    lab.rete_ok(&["create", "b2", "--network", "lan", "--ip", &b.to_string()]);
    let (b2_ns, b2) = (lab.container_ns("b2"), lab.addr_of("b2", "lan", false));
    assert_eq!(b2, b, "the freed address is leased again");
    assert_eq!(tcp_reaches(&a_ns, &b2_ns, b2, 5602), Some(a.to_string()));
    assert_eq!(
        tcp_reaches(&lab.host, &b2_ns, b2, 5603),
        Some("10.72.9.1".into())
    );

    lab.rete_ok(&["rm", "a", "b2"]);
    lab.rete_ok(&["network", "rm", "lan"]);
    assert_no_residue(&lab);
}
