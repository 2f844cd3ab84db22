//! A network's routes as its containers see them: static routes
//! (`--route DESTINATION,GATEWAY[,METRIC]`, Podman's `--route`), a default
//! route's metric (`--opt metric=N`) and no default route at all
//! (`--opt no_default_route=true`).

mod common;

use std::net::IpAddr;

use common::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `ip route` inside a container, one route per line.
fn routes(lab: &Lab, container: &str) -> String {
    lab.rete_ok(&["exec", container, "--", "ip", "-4", "route"])
}

/// Two isolated networks joined by a router container on both: with each
/// network's route to the other via the router, containers reach each
/// other across them with their own addresses, and only while the router
/// forwards (the host does not route between isolated networks).
#[test]
fn a_route_via_a_router_container_reaches_another_network() {
    require_root!();
    let lab = Lab::new("routes-router");
    lab.rete_ok(&[
        "network",
        "create",
        "a",
        "--subnet",
        "10.61.0.0/24",
        "--route",
        "10.62.0.0/24,10.61.0.5",
        "--disable-dns",
    ]);
    lab.rete_ok(&[
        "network",
        "create",
        "b",
        "--subnet",
        "10.62.0.0/24",
        "--route",
        "10.61.0.0/24,10.62.0.5,30",
        "--disable-dns",
    ]);
    lab.rete_ok(&["create", "router", "--network", "a", "--ip", "10.61.0.5"]);
    lab.rete_ok(&["network", "connect", "b", "router", "--ip", "10.62.0.5"]);
    lab.rete_ok(&["create", "c1", "--network", "a", "--ip", "10.61.0.10"]);
    lab.rete_ok(&["create", "c2", "--network", "b", "--ip", "10.62.0.10"]);

    let r1 = routes(&lab, "c1");
    assert!(r1.contains("10.62.0.0/24 via 10.61.0.5 dev eth0"), "{r1}");
    assert!(r1.contains("default via 10.61.0.1 dev eth0"), "{r1}");
    let r2 = routes(&lab, "c2");
    assert!(
        r2.contains("10.61.0.0/24 via 10.62.0.5 dev eth0") && r2.contains("metric 30"),
        "{r2}"
    );
    // The network record carries its routes.
    let net: serde_json::Value =
        serde_json::from_str(&lab.rete_ok(&["network", "inspect", "b"])).unwrap();
    assert_eq!(net[0]["routes"][0]["destination"], "10.61.0.0/24", "{net}");
    assert_eq!(net[0]["routes"][0]["gateway"], "10.62.0.5", "{net}");
    assert_eq!(net[0]["routes"][0]["metric"], 30, "{net}");

    let c2 = lab.container_ns("c2");
    let _srv = Server::tcp(&c2, ip("10.62.0.10"), 7100, "across", 2);
    // The router does not forward yet: the route leads nowhere.
    assert_eq!(
        tcp_get(&lab.container_ns("c1"), ip("10.62.0.10"), 7100),
        None
    );
    lab.rete_ok(&[
        "exec",
        "router",
        "--",
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    let got = tcp_get(&lab.container_ns("c1"), ip("10.62.0.10"), 7100)
        .expect("c1 reaches c2 through the router");
    // No NAT on the way: c2 sees c1's own address.
    assert_eq!(got, "across 10.61.0.10");
}

/// `no_default_route` leaves a container with its subnet route only;
/// `metric` gives a network's default route that metric and lets it sit
/// beside another network's, the lower metric winning.
#[test]
fn no_default_route_and_default_route_metrics() {
    require_root!();
    let lab = Lab::new("routes-default");
    lab.rete_ok(&[
        "network",
        "create",
        "quiet",
        "--subnet",
        "10.63.0.0/24",
        "--opt",
        "no_default_route=true",
        "--route",
        "10.99.0.0/16,10.63.0.7",
        "--disable-dns",
    ]);
    lab.rete_ok(&["create", "q", "--network", "quiet"]);
    let r = routes(&lab, "q");
    assert!(!r.contains("default"), "no default route: {r}");
    assert!(r.contains("10.63.0.0/24 dev eth0"), "{r}");
    assert!(r.contains("10.99.0.0/16 via 10.63.0.7 dev eth0"), "{r}");

    lab.rete_ok(&[
        "network",
        "create",
        "main",
        "--subnet",
        "10.64.0.0/24",
        "--disable-dns",
    ]);
    lab.rete_ok(&[
        "network",
        "create",
        "backup",
        "--subnet",
        "10.65.0.0/24",
        "--opt",
        "metric=300",
        "--disable-dns",
    ]);
    lab.rete_ok(&["create", "two", "--network", "main", "--network", "backup"]);
    let r = routes(&lab, "two");
    let defaults: Vec<&str> = r.lines().filter(|l| l.starts_with("default")).collect();
    assert_eq!(defaults.len(), 2, "{r}");
    assert!(defaults[0].contains("via 10.64.0.1 dev eth0"), "{r}");
    assert!(
        defaults[1].contains("via 10.65.0.1 dev eth1") && defaults[1].contains("metric 300"),
        "{r}"
    );
    // The order the networks are joined in does not matter.
    lab.rete_ok(&["create", "owt", "--network", "backup", "--network", "main"]);
    let r = routes(&lab, "owt");
    assert!(
        r.contains("default via 10.65.0.1 dev eth0 proto static metric 300"),
        "{r}"
    );
    assert!(r.contains("default via 10.64.0.1 dev eth1"), "{r}");
    // Without its metric the second network adds no default route.
    lab.rete_ok(&[
        "network",
        "create",
        "plain",
        "--subnet",
        "10.66.0.0/24",
        "--disable-dns",
    ]);
    lab.rete_ok(&["network", "connect", "plain", "q"]);
    lab.rete_ok(&["create", "three", "--network", "main", "--network", "plain"]);
    let r = routes(&lab, "three");
    assert_eq!(
        r.lines().filter(|l| l.starts_with("default")).count(),
        1,
        "{r}"
    );
    let r = routes(&lab, "q");
    assert!(
        r.contains("default via 10.66.0.1 dev eth1"),
        "a network without no_default_route routes q by default: {r}"
    );
}

/// The address a static route points at is the router's: allocation never
/// hands it to another container (it would answer for the router), while
/// the router container still gets it by asking.
#[test]
fn allocation_skips_the_addresses_routes_point_at() {
    require_root!();
    let lab = Lab::new("routes-skip");
    lab.rete_ok(&[
        "network",
        "create",
        "a",
        "--subnet",
        "10.63.0.0/24",
        "--route",
        "10.64.0.0/24,10.63.0.2",
        "--route",
        "10.65.0.0/24,10.63.0.3",
        "--disable-dns",
    ]);
    lab.rete_ok(&["create", "c1", "--network", "a"]);
    assert_eq!(lab.addr_of("c1", "a", false), ip("10.63.0.4"));
    lab.rete_ok(&["create", "router", "--network", "a", "--ip", "10.63.0.2"]);
    assert_eq!(lab.addr_of("router", "a", false), ip("10.63.0.2"));
    lab.rete_ok(&["create", "c2", "--network", "a"]);
    assert_eq!(lab.addr_of("c2", "a", false), ip("10.63.0.5"));
    lab.rete_ok(&["rm", "c1", "c2", "router"]);
}
