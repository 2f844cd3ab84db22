//! The shortcut past the bridge (src/fastpath.rs): traffic between two
//! containers of one network goes from one host-side veth end straight into
//! the other container, never out of the destination's host end; with
//! `-o fastpath=false` it crosses the bridge as before. Everything else
//! still takes the bridge: isolation between networks holds, and a removed
//! container's address leaves the shortcut.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::*;

/// Bytes sent in one transfer.
const BULK: usize = 4 << 20;

/// Runs `f` on a thread inside the network namespace at `ns`.
fn in_ns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(ns).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Sends BULK bytes over TCP from the container at `from` to a listener in
/// `to` on `addr`; returns how many arrived.
fn transfer(from: &Path, to: &Path, addr: IpAddr) -> usize {
    let listener = in_ns(to, move || {
        TcpListener::bind(SocketAddr::new(addr, 7300)).unwrap()
    });
    listener.set_nonblocking(false).unwrap();
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    });
    in_ns(from, move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::new(addr, 7300), Duration::from_secs(3))
                .unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&vec![7u8; BULK]).unwrap();
    });
    receiver.join().unwrap()
}

/// Bytes the host end of `container`'s veth has sent toward it.
fn toward(lab: &Lab, container: &str) -> u64 {
    let veth = lab.inspect(container)["endpoints"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    let out = lab.sh_host(&format!("ip -s -j link show {veth}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["stats64"]["tx"]["bytes"].as_u64().unwrap()
}

#[test]
fn traffic_between_containers_skips_the_bridge() {
    require_root!();
    let lab = Lab::new("fastpath");
    for (net, subnet, opt) in [
        ("fast", "10.73.0.0/24", "fastpath=true"),
        ("slow", "10.74.0.0/24", "fastpath=false"),
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
