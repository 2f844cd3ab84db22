//! The shortcut past the bridge (src/fastpath): traffic between two
//! containers of one network goes from one host-side veth end straight into
//! the other container, never out of the destination's host end; with
//! `-o fastpath=false` it crosses the bridge as before. Everything else
//! still takes the bridge: isolation between networks holds, and a removed
//! container's address leaves the shortcut.

mod common;

use std::net::IpAddr;

use common::*;

/// Bytes the host end of `container`'s veth has sent toward it.
fn toward(lab: &Lab, container: &str) -> u64 {
    let veth = lab.inspect(container)["endpoints"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    tx_bytes(&lab.host, &veth)
}

/// Networks `fast` (on the shortcut) and `slow` (off it) on `subnets`.
fn fast_and_slow(lab: &Lab, subnets: [&str; 2]) {
    for (net, subnet, opt) in [
        ("fast", subnets[0], "fastpath=true"),
        ("slow", subnets[1], "fastpath=false"),
    ] {
        lab.rete_ok(&[
            "network",
            "create",
            net,
            "--subnet",
            subnet,
            "-o",
            opt,
            "--disable-dns",
        ]);
    }
}

#[test]
fn traffic_between_containers_skips_the_bridge() {
    require_root!();
    let lab = Lab::new("fastpath");
    fast_and_slow(&lab, ["10.73.0.0/24", "10.74.0.0/24"]);
    for net in ["fast", "slow"] {
        lab.rete_ok(&["create", &format!("{net}-a"), "--network", net]);
        lab.rete_ok(&["create", &format!("{net}-b"), "--network", net]);
    }

    // Through the shortcut: all of it arrives, none of it out of a's host
    // end (the acknowledgements the other way take the shortcut too).
    let a = lab.addr_of("fast-a", "fast", false);
    let before = toward(&lab, "fast-a");
    let got = transfer(&lab.container_ns("fast-b"), &lab.container_ns("fast-a"), a);
    assert_eq!(got, BULK);
    let crossed = toward(&lab, "fast-a") - before;
    assert!(
        crossed < (BULK / 10) as u64,
        "{crossed} of {BULK} bytes went out of fast-a's host end: not on the fast path"
    );
    // The host ends run the network's program from the one shared block
    // their bridge holds it in: an ingress qdisc each (in no egress block),
    // no filter each.
    let veth = lab.inspect("fast-a")["endpoints"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    let bridge = lab.bridge_of("fast");
    let qdisc = lab.sh_host(&format!("tc qdisc show dev {veth} ingress"));
    let block = qdisc
        .split_whitespace()
        .skip_while(|w| *w != "ingress_block")
        .nth(1)
        .unwrap_or_else(|| panic!("{veth} is on no shared block: {qdisc}"))
        .to_string();
    assert!(!qdisc.contains("egress_block"), "{veth}: {qdisc}");
    assert!(
        lab.sh_host(&format!("tc qdisc show dev {bridge} ingress"))
            .contains(&format!("ingress_block {block} ")),
        "{bridge} is not on block {block}"
    );
    assert!(
        lab.sh_host(&format!("tc filter show block {block} ingress"))
            .contains("rete_fastpath"),
        "block {block} lacks the program"
    );
    // And back.
    let b = lab.addr_of("fast-b", "fast", false);
    assert_eq!(
        transfer(&lab.container_ns("fast-a"), &lab.container_ns("fast-b"), b),
        BULK
    );

    // Turned off: the same transfer crosses the bridge and a's host end.
    let a = lab.addr_of("slow-a", "slow", false);
    let before = toward(&lab, "slow-a");
    assert_eq!(
        transfer(&lab.container_ns("slow-b"), &lab.container_ns("slow-a"), a),
        BULK
    );
    let crossed = toward(&lab, "slow-a") - before;
    assert!(
        crossed >= BULK as u64,
        "only {crossed} bytes crossed the bridge"
    );

    // The shortcut never crosses networks.
    assert!(!ping_once(&lab.container_ns("fast-a"), a));

    // A removed container's address leaves the shortcut: a container that
    // takes the address over (with the MAC derived from it) gets the
    // traffic, the removed one nothing.
    let b = lab.addr_of("fast-b", "fast", false);
    lab.rete_ok(&["rm", "fast-b"]);
    assert!(!ping_once(&lab.container_ns("fast-a"), b));
    lab.rete_ok(&[
        "create",
        "fast-c",
        "--network",
        "fast",
        "--ip",
        &b.to_string(),
    ]);
    assert!(ping(&lab.container_ns("fast-a"), b));
    assert_eq!(
        transfer(&lab.container_ns("fast-a"), &lab.container_ns("fast-c"), b),
        BULK
    );

    for c in ["fast-a", "fast-c", "slow-a", "slow-b"] {
        lab.rete_ok(&["rm", c]);
    }
    lab.rete_ok(&["network", "rm", "fast", "slow"]);
    let links = lab.host_links();
    assert!(!links.iter().any(|l| l.starts_with("rete")), "{links:?}");
}

#[test]
fn published_ports_from_the_uplink_skip_the_host() {
    require_root!();
    let lab = Lab::new("fastpath-pub");
    fast_and_slow(&lab, ["10.75.0.0/24", "10.76.0.0/24"]);
    lab.rete_ok(&[
        "create",
        "web",
        "--network",
        "fast",
        "-p",
        "8080:7300",
        "-p",
        "9090:7301/udp",
    ]);
    lab.rete_ok(&["create", "old", "--network", "slow", "-p", "8081:7300"]);
    let uplink: IpAddr = UPLINK_HOST.parse().unwrap();
    let at = |ip: IpAddr, port: u16| std::net::SocketAddr::new(ip, port);

    // From the outside through the published port: all of it arrives,
    // none of it out of web's host end (the host did not forward it).
    let web = lab.addr_of("web", "fast", false);
    let before = toward(&lab, "web");
    let got = transfer_via(
        &lab.outside,
        &lab.container_ns("web"),
        at(web, 7300),
        at(uplink, 8080),
    );
    assert_eq!(got, BULK);
    let crossed = toward(&lab, "web") - before;
    assert!(
        crossed < (BULK / 10) as u64,
        "{crossed} of {BULK} bytes went out of web's host end: not on the shortcut"
    );
    // UDP too; the answer comes back from the host's address and port (the
    // client's socket is connected to them) and the server saw the client's.
    let udp = Server::udp(&lab.container_ns("web"), web, 7301, "udp", 3);
    let answer = in_ns(&lab.outside, || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(at(uplink, 9090)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        let mut buf = [0u8; 512];
        (0..3).find_map(|_| {
            s.send(b"ping").ok()?;
            let n = s.recv(&mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
    });
    assert_eq!(answer, Some(format!("udp {UPLINK_OUTSIDE}")));
    // The servers hold their namespaces until dropped.
    drop(udp);

    // Off the shortcut: the host's DNAT and the bridge, as before.
    let old = lab.addr_of("old", "slow", false);
    let before = toward(&lab, "old");
    let got = transfer_via(
        &lab.outside,
        &lab.container_ns("old"),
        at(old, 7300),
        at(uplink, 8081),
    );
    assert_eq!(got, BULK);
    assert!(toward(&lab, "old") - before >= BULK as u64);

    // Removed, the port answers no more: not even a container that takes
    // web's address over and listens where web did.
    lab.rete_ok(&["rm", "web"]);
    let web_ip = web.to_string();
    lab.rete_ok(&["create", "next", "--network", "fast", "--ip", &web_ip]);
    let tcp = Server::tcp(&lab.container_ns("next"), web, 7300, "next", 1);
    assert_eq!(tcp_get(&lab.outside, uplink, 8080), None);
    drop(tcp);
    lab.rete_ok(&["rm", "next", "old"]);
    lab.rete_ok(&["network", "rm", "fast", "slow"]);
    assert!(
        !lab.sh_host("tc filter show dev uplink ingress")
            .contains("rete_pub"),
        "the publish program stays on the uplink"
    );
    assert_no_residue(&lab);
}

#[test]
fn bad_fastpath_option_is_refused() {
    require_root!();
    let lab = Lab::new("fastpath-bad");
    let err = lab.rete_err(&["network", "create", "n", "-o", "fastpath=maybe"]);
    assert!(
        err.contains("fastpath=maybe") && err.contains("true or false"),
        "{err}"
    );
    assert_eq!(lab.rete_ok(&["network", "ls", "-q"]).trim(), "");
}
