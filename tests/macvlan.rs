//! Macvlan networks: containers sit on the link of one of the host's
//! devices (here the lab's uplink), with MAC addresses of their own, and are
//! reached at their own addresses from that link, without NAT. rete makes
//! nothing on the host for such a network and never touches the parent.

mod common;

use std::net::IpAddr;

use common::*;

/// A macvlan network on the lab's uplink, leasing from its upper half so
/// that the host's and the outside's addresses (.1, .2) are never leased.
fn lan(lab: &Lab, name: &str, mode: &str) {
    lab.rete_ok(&[
        "network",
        "create",
        name,
        "--driver",
        "macvlan",
        "--opt",
        "parent=uplink",
        "--opt",
        &format!("mode={mode}"),
        "--subnet",
        "192.0.2.0/24",
        "--gateway",
        UPLINK_OUTSIDE,
        "--ip-range",
        "192.0.2.128/25",
    ]);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The container's links as `ip -d link` shows them.
fn links_in(lab: &Lab, container: &str) -> String {
    sh_in(&lab.container_ns(container), "ip -d -o link show")
}

#[test]
fn containers_on_a_macvlan_network_are_on_the_parent_link() {
    require_root!();
    let lab = Lab::new("macvlan");
    lan(&lab, "lan", "bridge");
    // Nothing of the host changed: no device, no firewall table.
    assert!(lab.links_named("rete").is_empty(), "{:?}", lab.host_links());
    assert_eq!(lab.nft(), "", "a macvlan network needs no firewall");
    let net: serde_json::Value =
        serde_json::from_str(&lab.rete_ok(&["network", "inspect", "lan"])).unwrap();
    assert_eq!(net[0]["driver"], "macvlan");
    assert_eq!(net[0]["bridge"], "uplink");
    assert_eq!(net[0]["options"]["mode"], "bridge");
    assert_eq!(net[0]["dns"], false);

    lab.rete_ok(&["create", "a", "--network", "lan"]);
    lab.rete_ok(&["create", "b", "--network", "lan", "--ip", "192.0.2.200"]);
    let a = lab.addr_of("a", "lan", false);
    let b = lab.addr_of("b", "lan", false);
    assert!(
        "192.0.2.128/25"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&a),
        "{a} from the ip range"
    );
    assert_eq!(b, ip("192.0.2.200"));
    let links = links_in(&lab, "a");
    assert!(
        links.contains("eth0") && links.contains("macvlan mode bridge"),
        "{links}"
    );
    let routes = sh_in(&lab.container_ns("a"), "ip route");
    assert!(
        routes.contains(&format!("default via {UPLINK_OUTSIDE} dev eth0")),
        "{routes}"
    );

    // The outside reaches the containers at their own addresses, and sees
    // theirs when they reach it: no NAT either way.
    assert!(ping(&lab.outside, a), "outside -> a");
    let _srv = Server::tcp(&lab.outside, ip(UPLINK_OUTSIDE), 7000, "outside", 1);
    let reply = tcp_get(&lab.container_ns("a"), ip(UPLINK_OUTSIDE), 7000);
    assert_eq!(reply, Some(format!("outside {a}")));
    // Macvlan in bridge mode: siblings reach each other inside the host.
    assert!(ping(&lab.container_ns("a"), b), "a -> b");

    // A published port needs the host in the path, which a macvlan
    // container does not have.
    let err = lab.rete_err(&["create", "web", "--network", "lan", "-p", "8080:80"]);
    assert!(err.contains("no bridge network"), "{err}");
    assert!(!lab.container_ns("web").exists());

    let err = lab.rete_err(&["network", "rm", "lan"]);
    assert!(err.contains("in use"), "{err}");
    lab.rete_ok(&["rm", "a", "b"]);
    lab.rete_ok(&["network", "rm", "lan"]);
    assert!(
        lab.host_links().contains(&"uplink".to_string()),
        "the parent is the host's: {:?}",
        lab.host_links()
    );
    assert!(
        ping(&lab.host, ip(UPLINK_OUTSIDE)),
        "the uplink still works"
    );
    assert_eq!(lab.rete_ok(&["network", "ls", "-q"]).trim(), "");
}

#[test]
fn private_mode_keeps_siblings_apart() {
    require_root!();
    let lab = Lab::new("macvlan-private");
    lan(&lab, "lan", "private");
    lab.rete_ok(&["create", "a", "--network", "lan"]);
    lab.rete_ok(&["create", "b", "--network", "lan"]);
    let b = lab.addr_of("b", "lan", false);
    assert!(links_in(&lab, "a").contains("macvlan mode private"));
    assert!(
        ping(&lab.container_ns("a"), ip(UPLINK_OUTSIDE)),
        "a -> outside"
    );
    assert!(
        ping(&lab.container_ns("b"), ip(UPLINK_OUTSIDE)),
        "b -> outside"
    );
    assert!(
        !ping_once(&lab.container_ns("a"), b),
        "private: a must not reach b"
    );
}

#[test]
fn a_bridge_container_joins_and_leaves_a_macvlan_network() {
    require_root!();
    let lab = Lab::new("macvlan-connect");
    lan(&lab, "lan", "bridge");
    lab.rete_ok(&["network", "create", "br", "--subnet", "10.61.0.0/24"]);
    lab.rete_ok(&["create", "c", "--network", "br", "-p", "8080:80"]);
    lab.rete_ok(&["network", "connect", "lan", "c"]);
    let on_lan = lab.addr_of("c", "lan", false);
    assert!(
        links_in(&lab, "c").contains("eth1"),
        "{}",
        links_in(&lab, "c")
    );
    assert!(ping(&lab.outside, on_lan), "outside -> c on the lan");
    // Its published port still leads to its bridge address.
    let elements = lab.published_elements();
    assert!(elements.contains("10.61.0."), "{elements}");

    lab.rete_ok(&["network", "disconnect", "lan", "c"]);
    assert!(
        !links_in(&lab, "c").contains("eth1"),
        "{}",
        links_in(&lab, "c")
    );
    assert!(!ping_once(&lab.outside, on_lan));
    // Its lease is free again: the address comes back to the next one.
    lab.rete_ok(&[
        "create",
        "d",
        "--network",
        "lan",
        "--ip",
        &on_lan.to_string(),
    ]);
}

#[test]
fn gc_rebuilds_a_lost_macvlan_interface() {
    require_root!();
    let lab = Lab::new("macvlan-gc");
    lan(&lab, "lan", "bridge");
    lab.rete_ok(&["create", "a", "--network", "lan"]);
    let a = lab.addr_of("a", "lan", false);
    sh_in(&lab.container_ns("a"), "ip link del eth0");
    assert!(!ping_once(&lab.outside, a));
    let report = lab.rete_ok(&["gc", "--format", "json"]);
    assert!(report.contains("\"a\""), "{report}");
    assert!(ping(&lab.outside, a), "outside -> a after gc");
    // A second pass finds nothing to do.
    let report: serde_json::Value =
        serde_json::from_str(&lab.rete_ok(&["gc", "--format", "json"])).unwrap();
    assert_eq!(report["repaired"], serde_json::json!([]), "{report}");
}

#[test]
fn bad_macvlan_networks_are_refused_and_change_nothing() {
    require_root!();
    let lab = Lab::new("macvlan-bad");
    let create = |extra: &[&str]| {
        let mut args = vec!["network", "create", "m", "-d", "macvlan"];
        args.extend_from_slice(extra);
        lab.rete_err(&args)
    };
    let sub = ["--subnet", "192.0.2.0/24"];
    let err = create(&[&["--opt", "parent=nosuch0"][..], &sub].concat());
    assert!(err.contains("\"nosuch0\" does not exist"), "{err}");
    let err = create(
        &[
            &["--opt", "parent=uplink", "--opt", "mode=source"][..],
            &sub,
        ]
        .concat(),
    );
    assert!(err.contains("unknown macvlan mode \"source\""), "{err}");
    let err = create(&["--opt", "parent=uplink"]);
    assert!(err.contains("needs --subnet"), "{err}");
    let err = create(&[&["--opt", "parent=uplink", "--interface", "br9"][..], &sub].concat());
    assert!(err.contains("has no bridge"), "{err}");
    let err = create(
        &[
            &["--opt", "parent=uplink", "--opt", "isolate=true"][..],
            &sub,
        ]
        .concat(),
    );
    assert!(
        err.contains("unknown macvlan network option \"isolate\""),
        "{err}"
    );
    let err = lab.rete_err(&["network", "create", "m", "-d", "ipvlan"]);
    assert!(err.contains("ipvlan"), "{err}");
    assert_eq!(lab.rete_ok(&["network", "ls", "-q"]).trim(), "");

    // A bridge network's device is not a parent; a tap needs a bridge.
    lab.rete_ok(&["network", "create", "br", "--interface", "retebr9"]);
    let err = create(&[&["--opt", "parent=retebr9"][..], &sub].concat());
    assert!(err.contains("rete made"), "{err}");
    lan(&lab, "lan", "bridge");
    let err = lab.rete_err(&["tap", "create", "tap9", "--network", "lan"]);
    assert!(err.contains("macvlan network"), "{err}");
    assert!(!lab.host_links().contains(&"tap9".to_string()));
}
