//! 100 CNI ADDs at once on one network, as a busy node's runtime issues
//! them (100 plugin processes, 100 namespaces): no error, 100 distinct
//! addresses, each configured in its namespace, each published port in the
//! firewall. Then 100 DELs at once leave nothing: no container, no rete
//! veth, no lease (a fresh ADD gets the first address), no published port.

mod cni_runner;
mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::Instant;

use cni_runner::*;
use common::*;
use serde_json::{json, Value};

const N: usize = 100;

fn rt(i: usize, ns: &[PathBuf]) -> RuntimeConf {
    RuntimeConf::new(&format!("ctr{i}"), &ns[i]).cap(
        "portMappings",
        json!([{ "hostPort": 9000 + i, "containerPort": 80, "protocol": "tcp" }]),
    )
}

/// Runs `op` for every attachment at once, one thread (and so one plugin
/// process) each, released together.
fn all_at_once<T: Send>(op: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(N);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let (barrier, op) = (&barrier, &op);
                s.spawn(move || {
                    barrier.wait();
                    op(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn hundred_parallel_adds_then_hundred_parallel_dels() {
    require_root!();
    let lab = Lab::new("cni-parallel");
    let runner = Runner::install(&lab);
    let list = NetList::from_value(json!({
        "cniVersion": "1.1.0",
        "name": "busy",
        "plugins": [{
            "type": "rete",
            "capabilities": { "portMappings": true },
            "ipam": { "ranges": [[{ "subnet": "10.100.0.0/24" }]] }
        }]
    }));
    let ns: Vec<PathBuf> = (0..N)
        .map(|i| container_ns(&lab, &format!("ctr{i}")))
        .collect();

    let started = Instant::now();
    let results = all_at_once(|i| runner.add(&list, &rt(i, &ns)));
    eprintln!("{N} parallel ADDs took {:?}", started.elapsed());
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(
        failed.is_empty(),
        "{} ADDs failed: {failed:#?}",
        failed.len()
    );
    let results: Vec<Value> = results.into_iter().map(Result::unwrap).collect();

    let addrs: BTreeSet<IpAddr> = results.iter().map(ip4_of).collect();
    assert_eq!(addrs.len(), N, "duplicate addresses: {addrs:?}");
    assert!(
        !addrs.contains(&"10.100.0.1".parse().unwrap()),
        "the gateway was handed out"
    );
    for (i, r) in results.iter().enumerate() {
        assert_result_shape(r, "1.1.0", &ns[i], "eth0");
        let want = format!(" {}/24 ", ip4_of(r));
        let have = sh_in(&ns[i], "ip -4 -o addr show dev eth0");
        assert!(have.contains(&want), "ctr{i}: {have}");
    }
    assert_eq!(lab.rete_ok(&["ls", "-q"]).lines().count(), N);
    assert_eq!(lab.links_named("rete-").len(), N, "{:?}", lab.host_links());
    let published = lab.published_elements();
    for i in 0..N {
        assert!(
            published.contains(&format!(" {} ", 9000 + i)),
            "port {}: {published}",
            9000 + i
        );
    }
    let last = ip4_of(&results[N - 1]);
    assert!(ping(&ns[0], last), "ctr0 cannot reach {last}");
    let first = ip4_of(&results[0]);
    let _srv = Server::tcp(&ns[0], first, 80, "ctr0", 1);
    assert_eq!(
        tcp_get(&lab.outside, UPLINK_HOST.parse().unwrap(), 9000).as_deref(),
        Some(format!("ctr0 {UPLINK_OUTSIDE}").as_str())
    );

    let started = Instant::now();
    let results = all_at_once(|i| runner.del(&list, &rt(i, &ns)));
    eprintln!("{N} parallel DELs took {:?}", started.elapsed());
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(
        failed.is_empty(),
        "{} DELs failed: {failed:#?}",
        failed.len()
    );

    assert_eq!(lab.rete_ok(&["ls", "-q"]), "");
    assert_eq!(lab.links_named("rete-"), Vec::<String>::new());
    assert_eq!(lab.published_elements(), "", "published ports left");
    for (i, n) in ns.iter().enumerate() {
        let left = sh_in(n, "ip -o link show | grep -v ' lo:' || true");
        assert_eq!(left, "", "ctr{i} keeps devices");
    }
    let cached: Vec<_> = std::fs::read_dir(&runner.cache_dir)
        .unwrap()
        .flatten()
        .collect();
    assert!(cached.is_empty(), "cached results left: {cached:?}");
    // No lease and no port claim survived in the store.
    assert_store_holds_nothing(&lab);
    // And the first address, leased by one of the hundred, may be asked for.
    let fresh = RuntimeConf::new("fresh", &container_ns(&lab, "fresh")).arg("IP", "10.100.0.2");
    let r = runner.add(&list, &fresh).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ip4_of(&r), "10.100.0.2".parse::<IpAddr>().unwrap(), "{r}");
    runner.del(&list, &fresh).unwrap_or_else(|e| panic!("{e}"));
}
