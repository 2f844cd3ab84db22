//! Container network modes as a user sees them from inside the container:
//! `none`, `host`, bridge, `container:OTHER`, several networks at once, and
//! `network connect` / `disconnect`.

mod common;

use std::net::IpAddr;

use common::*;

/// Runs a command in a container through `rete exec`; returns its stdout.
fn exec(lab: &Lab, name: &str, argv: &[&str]) -> String {
    let mut args = vec!["exec", name, "--"];
    args.extend_from_slice(argv);
    lab.rete_ok(&args)
}

#[test]
fn none_mode_has_only_loopback_and_it_is_up() {
    require_root!();
    let lab = Lab::new("mode-none");
    let links = lab.rete_ok(&["run", "--network", "none", "iso", "--", "ip", "-o", "link"]);
    assert_eq!(link_names(&links), ["lo"], "{links}");
    assert!(
        links.contains("<LOOPBACK,UP,LOWER_UP>"),
        "lo is up: {links}"
    );
    let addrs = exec(&lab, "iso", &["ip", "-o", "-4", "addr"]);
    assert!(addrs.contains("inet 127.0.0.1/8"), "{addrs}");
    assert_eq!(addrs.lines().count(), 1, "only loopback: {addrs}");
    let routes = exec(&lab, "iso", &["ip", "route", "show", "default"]);
    assert_eq!(routes.trim(), "", "no default route");
    // It has its own namespace, not the host's: the uplink is not there.
    assert!(!link_names(&links).contains(&"uplink".to_string()));
    // A server on its loopback answers there.
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let _srv = Server::tcp(&lab.container_ns("iso"), lo, 7000, "lo-none", 1);
    let got = tcp_get(&lab.container_ns("iso"), lo, 7000).expect("loopback answers");
    assert_eq!(got, "lo-none 127.0.0.1");

    let c = lab.inspect("iso");
    assert_eq!(c["mode"]["mode"], "none", "{c}");
    assert_eq!(c["endpoints"].as_array().unwrap().len(), 0);

    lab.rete_ok(&["rm", "iso"]);
    assert!(!lab.container_ns("iso").exists(), "namespace unpinned");
    assert_no_residue(&lab);
}

#[test]
fn host_mode_runs_in_the_host_namespace() {
    require_root!();
    let lab = Lab::new("mode-host");
    let links = lab.rete_ok(&["run", "--network", "host", "h", "--", "ip", "-o", "link"]);
    assert!(
        link_names(&links).contains(&"uplink".to_string()),
        "the host's uplink is visible: {links}"
    );
    let addrs = exec(&lab, "h", &["ip", "-o", "-4", "addr", "show", "uplink"]);
    assert!(addrs.contains(&format!("inet {UPLINK_HOST}/24")), "{addrs}");
    // It can use the host's connectivity directly: no NAT, its source is the
    // host's own address.
    let outside: IpAddr = UPLINK_OUTSIDE.parse().unwrap();
    let _srv = Server::tcp(&lab.outside, outside, 7001, "seen", 1);
    let got = lab.rete_ok(&[
        "exec",
        "h",
        "--",
        "timeout",
        "5",
        "busybox",
        "nc",
        "-w",
        "2",
        UPLINK_OUTSIDE,
        "7001",
    ]);
    assert_eq!(got, format!("seen {UPLINK_HOST}"));

    let c = lab.inspect("h");
    assert_eq!(c["mode"]["mode"], "host", "{c}");
    assert!(c["netns"].is_null(), "{c}");
    // -p makes no sense without a namespace of its own.
    let err = lab.rete_err(&["create", "h2", "--network", "host", "-p", "80"]);
    assert!(err.contains("-p needs a bridge network"), "{err}");

    lab.rete_ok(&["rm", "h"]);
    // Removing a host-mode container leaves the host's devices alone.
    assert!(lab.host_links().contains(&"uplink".to_string()));
    assert_no_residue(&lab);
}

#[test]
fn bridge_mode_has_eth0_with_address_default_route_and_lo_up() {
    require_root!();
    let lab = Lab::new("mode-bridge");
    lab.rete_ok(&["network", "create", "br", "--subnet", "10.71.0.0/24"]);
    lab.rete_ok(&["create", "c", "--network", "br"]);
    let ip = lab.addr_of("c", "br", false);
    assert!(ip.to_string().starts_with("10.71.0."), "{ip}");

    let links = exec(&lab, "c", &["ip", "-o", "link"]);
    let mut names = link_names(&links);
    names.sort();
    assert_eq!(names, ["eth0", "lo"], "{links}");
    for l in links.lines() {
        assert!(l.contains(",UP,") || l.contains(",UP>"), "up: {l}");
    }
    let addrs = exec(&lab, "c", &["ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addrs.contains(&format!("inet {ip}/24")), "{addrs}");
    let route = exec(&lab, "c", &["ip", "route", "show", "default"]);
    assert!(
        route.starts_with("default via 10.71.0.1 dev eth0"),
        "{route}"
    );
    // The gateway answers, and the container is reachable from the host.
    assert!(ping(&lab.container_ns("c"), "10.71.0.1".parse().unwrap()));
    assert!(ping(&lab.host, ip));
    // inspect agrees with the kernel.
    let c = lab.inspect("c");
    assert_eq!(c["mode"]["mode"], "bridge", "{c}");
    assert_eq!(c["endpoints"][0]["ifname"], "eth0");
    assert_eq!(c["endpoints"][0]["gateways"][0], "10.71.0.1");
    let mac = c["endpoints"][0]["mac"].as_str().unwrap().to_string();
    assert!(links.contains(&mac), "mac {mac} in {links}");
    // The host end is a bare bridge port: no IPv6 of its own, so no IPv6
    // route of the host names it (each would make every later link change
    // walk a longer table).
    let port = c["endpoints"][0]["host_ifname"].as_str().unwrap();
    assert_eq!(
        lab.sh_host(&format!("cat /proc/sys/net/ipv6/conf/{port}/disable_ipv6")),
        "1\n"
    );
    let routes6 = lab.sh_host("ip -6 route show table all");
    assert!(!routes6.contains(port), "{port} in {routes6}");
    // The bridge floods multicast rather than snooping it (no per-port
    // query timers to restart whenever a port comes up).
    let bridge = lab.bridge_of("br");
    let details = lab.sh_host(&format!("ip -d link show {bridge}"));
    assert!(details.contains("mcast_snooping 0"), "{details}");

    lab.rete_ok(&["rm", "c"]);
    lab.rete_ok(&["network", "rm", "br"]);
    assert_no_residue(&lab);
}

#[test]
fn container_mode_shares_the_other_containers_namespace() {
    require_root!();
    let lab = Lab::new("mode-container");
    lab.rete_ok(&["network", "create", "pod", "--subnet", "10.71.10.0/24"]);
    lab.rete_ok(&["create", "app", "--network", "pod"]);
    lab.rete_ok(&["create", "sidecar", "--network", "container:app"]);

    let app_addrs = exec(&lab, "app", &["ip", "-o", "addr"]);
    let side_addrs = exec(&lab, "sidecar", &["ip", "-o", "addr"]);
    assert_eq!(app_addrs, side_addrs, "same namespace, same addresses");
    let ip = lab.addr_of("app", "pod", false);
    assert!(
        side_addrs.contains(&format!("inet {ip}/24")),
        "{side_addrs}"
    );

    // A server on app's loopback answers the sidecar's loopback.
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let _srv = Server::tcp(&lab.container_ns("app"), lo, 9000, "from-app", 1);
    let got = lab.rete_ok(&[
        "exec",
        "sidecar",
        "--",
        "timeout",
        "5",
        "busybox",
        "nc",
        "-w",
        "2",
        "127.0.0.1",
        "9000",
    ]);
    assert_eq!(got, "from-app 127.0.0.1");

    let s = lab.inspect("sidecar");
    assert_eq!(s["mode"]["mode"], "container", "{s}");
    assert_eq!(s["mode"]["of"], "app", "{s}");
    // A third container joining the sidecar lands in app's namespace too.
    lab.rete_ok(&["create", "third", "--network", "container:sidecar"]);
    assert_eq!(exec(&lab, "third", &["ip", "-o", "addr"]), app_addrs);

    // app cannot go while others share its namespace.
    let err = lab.rete_err(&["rm", "app"]);
    assert!(err.contains("shares its network namespace"), "{err}");
    assert!(err.contains("sidecar"), "{err}");
    assert!(ping(&lab.host, ip), "app still works after the refusal");

    lab.rete_ok(&["rm", "third", "sidecar"]);
    // The sidecar's removal does not take app's namespace with it.
    assert!(ping(&lab.host, ip), "app still reachable");
    lab.rete_ok(&["rm", "app"]);
    lab.rete_ok(&["network", "rm", "pod"]);
    assert_no_residue(&lab);
}

#[test]
fn several_networks_and_connect_disconnect() {
    require_root!();
    let lab = Lab::new("mode-multi");
    lab.rete_ok(&["network", "create", "one", "--subnet", "10.71.21.0/24"]);
    lab.rete_ok(&["network", "create", "two", "--subnet", "10.71.22.0/24"]);
    lab.rete_ok(&["network", "create", "three", "--subnet", "10.71.23.0/24"]);
    lab.rete_ok(&["create", "m", "--network", "one", "--network", "two"]);

    let a1 = lab.addr_of("m", "one", false);
    let a2 = lab.addr_of("m", "two", false);
    let eth0 = exec(&lab, "m", &["ip", "-o", "-4", "addr", "show", "eth0"]);
    let eth1 = exec(&lab, "m", &["ip", "-o", "-4", "addr", "show", "eth1"]);
    assert!(eth0.contains(&format!("inet {a1}/24")), "{eth0}");
    assert!(eth1.contains(&format!("inet {a2}/24")), "{eth1}");
    assert!(a1.to_string().starts_with("10.71.21."), "{a1}");
    assert!(a2.to_string().starts_with("10.71.22."), "{a2}");
    // One default route, through the first network.
    let routes = exec(&lab, "m", &["ip", "route", "show", "default"]);
    assert_eq!(routes.lines().count(), 1, "{routes}");
    assert!(routes.contains("via 10.71.21.1 dev eth0"), "{routes}");
    let ns = lab.container_ns("m");
    assert!(ping(&ns, "10.71.21.1".parse().unwrap()));
    assert!(ping(&ns, "10.71.22.1".parse().unwrap()));

    // connect adds an interface with an address on the new network.
    lab.rete_ok(&["network", "connect", "three", "m"]);
    let a3 = lab.addr_of("m", "three", false);
    let eth2 = exec(&lab, "m", &["ip", "-o", "-4", "addr", "show", "eth2"]);
    assert!(eth2.contains(&format!("inet {a3}/24")), "{eth2}");
    assert!(ping(&ns, "10.71.23.1".parse().unwrap()));
    // Connecting twice is refused.
    let err = lab.rete_err(&["network", "connect", "three", "m"]);
    assert!(err.contains("already connected"), "{err}");

    // disconnect removes it, and the address goes with it.
    lab.rete_ok(&["network", "disconnect", "two", "m"]);
    let mut names = link_names(&exec(&lab, "m", &["ip", "-o", "link"]));
    names.sort();
    assert_eq!(names, ["eth0", "eth2", "lo"]);
    // The subnet route left with the interface. (10.71.22.1 itself still
    // answers through the default route: it is a host address, and
    // isolation governs forwarded traffic only.)
    let routes = exec(&lab, "m", &["ip", "route"]);
    assert!(!routes.contains("10.71.22.0/24"), "{routes}");
    let c = lab.inspect("m");
    let nets: Vec<&str> = c["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["network"].as_str().unwrap())
        .collect();
    assert_eq!(nets, ["one", "three"]);
    // Its address on "two" is free again: another container may take it.
    lab.rete_ok(&["create", "n", "--network", "two", "--ip", &a2.to_string()]);
    assert_eq!(lab.addr_of("n", "two", false), a2);
    // The freed interface name is reused by the next connect.
    lab.rete_ok(&["network", "disconnect", "three", "m"]);
    lab.rete_ok(&["network", "connect", "three", "m"]);
    let links = exec(&lab, "m", &["ip", "-o", "link"]);
    assert!(link_names(&links).contains(&"eth1".to_string()), "{links}");
    let err = lab.rete_err(&["network", "disconnect", "two", "m"]);
    assert!(err.contains("not connected"), "{err}");

    lab.rete_ok(&["rm", "m", "n"]);
    lab.rete_ok(&["network", "rm", "one", "two", "three"]);
    assert_no_residue(&lab);
}
