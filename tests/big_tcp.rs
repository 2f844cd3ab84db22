//! BIG TCP: a bridge network's veths take IPv4 GSO packets above 64 KiB
//! when the host's uplink does (or when `--opt gso_max_size=N` says so),
//! so containers on the network exchange fewer, larger packets. With a
//! 64 KiB uplink it stays off: packets that large would be segmented in
//! software on their way out of the host.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::*;

/// The IPv4 GSO limit of `ifname` in the namespace at `ns`.
fn gso_of(ns: &Path, ifname: &str) -> u32 {
    let f = File::open(ns).unwrap();
    let mut rtnl = rete::netlink::Rtnl::open_in(&f).unwrap();
    rtnl.link(ifname)
        .unwrap()
        .unwrap_or_else(|| panic!("no link {ifname}"))
        .gso_ipv4_max_size
        .expect("kernel reports gso_ipv4_max_size")
}

/// Raises the IPv4 GSO/GRO limit of the lab's uplink, as an admin does on a
/// NIC that supports BIG TCP.
fn big_uplink(lab: &Lab, size: u32) {
    let f = File::open(&lab.host).unwrap();
    let mut rtnl = rete::netlink::Rtnl::open_in(&f).unwrap();
    let uplink = rtnl.link("uplink").unwrap().unwrap();
    rtnl.set_gso_ipv4_max_size(uplink.index, size).unwrap();
}

/// The veth host end of a container's first endpoint.
fn host_end(lab: &Lab, container: &str) -> String {
    lab.inspect(container)["endpoints"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Sends `bytes` over TCP from `from` to a sink in `to` at `addr` and
/// returns how many bytes the sink read (a bounded transfer: 10 s at most).
fn transfer(from: &Path, to: &Path, addr: IpAddr, bytes: usize) -> usize {
    let sink_ns = File::open(to).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = std::thread::spawn(move || {
        nix::sched::setns(&sink_ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = TcpListener::bind(SocketAddr::new(addr, 7070)).expect("bind sink");
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("sink started");
    in_ns(from, || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::new(addr, 7070), Duration::from_secs(5))
                .expect("connect to sink");
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            s.write_all(&chunk[..n]).expect("send");
            sent += n;
        }
    });
    sink.join().unwrap()
}

#[test]
fn veths_follow_the_uplinks_gso_limit() {
    require_root!();
    let lab = Lab::new("bigtcp-auto");
    // The lab's uplink is a veth with the default 64 KiB: no BIG TCP.
    lab.rete_ok(&["network", "create", "plain", "--subnet", "10.91.0.0/24"]);
    lab.rete_ok(&["create", "p1", "--network", "plain"]);
    let plain: serde_json::Value =
        serde_json::from_str(&lab.rete_ok(&["network", "inspect", "plain"])).unwrap();
    assert!(plain[0].get("gso_max_size").is_none(), "{plain}");
    assert_eq!(gso_of(&lab.container_ns("p1"), "eth0"), 65536);

    big_uplink(&lab, 196608);
    lab.rete_ok(&["network", "create", "big", "--subnet", "10.92.0.0/24"]);
    let big: serde_json::Value =
        serde_json::from_str(&lab.rete_ok(&["network", "inspect", "big"])).unwrap();
    assert_eq!(big[0]["gso_max_size"], 196608, "{big}");
    lab.rete_ok(&["create", "b1", "--network", "big"]);
    lab.rete_ok(&["create", "b2", "--network", "big"]);
    for c in ["b1", "b2"] {
        assert_eq!(gso_of(&lab.container_ns(c), "eth0"), 196608, "{c} eth0");
        assert_eq!(
            gso_of(&lab.host, &host_end(&lab, c)),
            196608,
            "{c} host end"
        );
    }
    // The network made before keeps what it had.
    lab.rete_ok(&["create", "p2", "--network", "plain"]);
    assert_eq!(gso_of(&lab.container_ns("p2"), "eth0"), 65536);

    // Data crosses whole: container to container, and out of the host
    // (masqueraded) to the outside.
    let mib = 64 << 20;
    let b2 = lab.addr_of("b2", "big", false);
    assert_eq!(
        transfer(&lab.container_ns("b1"), &lab.container_ns("b2"), b2, mib),
        mib
    );
    let outside: IpAddr = UPLINK_OUTSIDE.parse().unwrap();
    assert_eq!(
        transfer(&lab.container_ns("b1"), &lab.outside, outside, mib),
        mib
    );
}

#[test]
fn gso_max_size_option_overrides_the_uplink() {
    require_root!();
    let lab = Lab::new("bigtcp-opt");
    lab.rete_ok(&[
        "network",
        "create",
        "big",
        "--subnet",
        "10.93.0.0/24",
        "-o",
        "gso_max_size=131072",
    ]);
    lab.rete_ok(&["create", "c1", "--network", "big"]);
    assert_eq!(gso_of(&lab.container_ns("c1"), "eth0"), 131072);

    // 65536 turns it off even on a BIG TCP uplink.
    big_uplink(&lab, 196608);
    lab.rete_ok(&[
        "network",
        "create",
        "off",
        "--subnet",
        "10.94.0.0/24",
        "-o",
        "gso_max_size=65536",
    ]);
    lab.rete_ok(&["create", "c2", "--network", "off"]);
    assert_eq!(gso_of(&lab.container_ns("c2"), "eth0"), 65536);
}
