//! The shortcut past the bridge (src/fastpath): traffic between two
//! containers of one network goes from one host-side veth end straight into
//! the other container, never out of the destination's host end; with
//! `-o fastpath=false` it crosses the bridge as before. Everything else
//! still takes the bridge: isolation between networks holds, and a removed
//! container's address leaves the shortcut.

mod common;

use common::*;

/// Bytes the host end of `container`'s veth has sent toward it.
fn toward(lab: &Lab, container: &str) -> u64 {
    let veth = lab.inspect(container)["endpoints"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    tx_bytes(&lab.host, &veth)
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
