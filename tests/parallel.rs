//! Many rete processes at once on one network: 50 parallel `rete create`
//! all succeed with 50 distinct addresses, and 50 parallel `rete rm` leave
//! no device, namespace or lease behind.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

const N: usize = 50;

/// Waits for every child until `deadline`; kills the stragglers. Returns
/// each one's (success, stderr).
fn wait_all(children: Vec<(String, Child)>, deadline: Instant) -> Vec<(String, bool, String)> {
    let mut out = Vec::new();
    for (name, mut child) in children {
        let status = loop {
            match child.try_wait().expect("wait for rete") {
                Some(s) => break Some(s),
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        let ok = status.is_some_and(|s| s.success());
        if status.is_none() {
            stderr.push_str("(killed: still running at the deadline)");
        }
        out.push((name, ok, stderr));
    }
    out
}

fn spawn_all(lab: &Lab, args: impl Fn(&str) -> Vec<String>) -> Vec<(String, Child)> {
    (0..N)
        .map(|i| {
            let name = format!("c{i}");
            let args = args(&name);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let child = lab
                .rete_cmd(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn rete");
            (name, child)
        })
        .collect()
}

#[test]
fn fifty_parallel_creates_then_fifty_parallel_removes() {
    require_root!();
    let lab = Lab::new("parallel");
    lab.rete_ok(&["network", "create", "web", "--subnet", "10.70.0.0/24"]);

    let started = Instant::now();
    let children = spawn_all(&lab, |name| {
        ["create", name, "--network", "web"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    let results = wait_all(children, started + Duration::from_secs(120));
    let failed: Vec<_> = results.iter().filter(|(_, ok, _)| !ok).collect();
    assert!(failed.is_empty(), "creates failed: {failed:?}");
    eprintln!("{N} parallel creates took {:?}", started.elapsed());

    // 50 containers, 50 distinct addresses, none of them the gateway.
    let listed = lab.rete_ok(&["ls", "-q"]);
    assert_eq!(listed.lines().count(), N, "{listed}");
    let addrs: BTreeSet<IpAddr> = (0..N)
        .map(|i| lab.addr_of(&format!("c{i}"), "web", false))
        .collect();
    assert_eq!(addrs.len(), N, "duplicate addresses: {addrs:?}");
    let gateway: IpAddr = "10.70.0.1".parse().unwrap();
    assert!(!addrs.contains(&gateway));
    // The kernel agrees with the store: one veth per container, each
    // container's address configured inside it, and they reach each other.
    assert_eq!(lab.links_named("rete-").len(), N, "{:?}", lab.host_links());
    for i in 0..N {
        let name = format!("c{i}");
        let want = lab.addr_of(&name, "web", false).to_string();
        let have = sh_in(&lab.container_ns(&name), "ip -4 -o addr show dev eth0");
        assert!(have.contains(&format!(" {want}/24 ")), "{name}: {have}");
    }
    let last = lab.addr_of(&format!("c{}", N - 1), "web", false);
    assert!(
        ping(&lab.container_ns("c0"), last),
        "c0 cannot reach {last}"
    );

    let started = Instant::now();
    let children = spawn_all(&lab, |name| vec!["rm".to_string(), name.to_string()]);
    let results = wait_all(children, started + Duration::from_secs(120));
    let failed: Vec<_> = results.iter().filter(|(_, ok, _)| !ok).collect();
    assert!(failed.is_empty(), "removes failed: {failed:?}");
    eprintln!("{N} parallel removes took {:?}", started.elapsed());

    assert_eq!(lab.rete_ok(&["ls", "-q"]), "");
    assert_eq!(lab.links_named("rete-"), Vec::<String>::new());
    let pinned: Vec<_> = std::fs::read_dir(lab.netns_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(pinned.is_empty(), "namespaces left: {pinned:?}");
    // No lease and no port claim survived in the store.
    assert_store_holds_nothing(&lab);
    // And the first address, leased by one of the fifty, may be asked for.
    lab.rete_ok(&["create", "fresh", "--network", "web", "--ip", "10.70.0.2"]);
    assert_eq!(lab.addr_of("fresh", "web", false).to_string(), "10.70.0.2");
}
