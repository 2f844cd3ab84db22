//! Bandwidth limits (src/tc.rs), as the CNI bandwidth plugin sets them up:
//! a token bucket on a veth shapes what leaves through it (a container's
//! ingress limit), and an ifb fed by an ingress redirect shapes what arrives
//! on it (a container's egress limit).
//!
//! The primitives first: the lab's `uplink` veth in its host namespace
//! stands for a host-side veth, its peer `wan` in the outside namespace for
//! the container. Then the `bandwidth` capability of rete's CNI plugin, on
//! real attachments. Rates are measured with a bulk TCP transfer, bounded in
//! time.

mod cni_runner;
mod common;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cni_runner::*;
use common::*;
use rete::netlink::Rtnl;
use rete::tc::Limit;
use serde_json::json;

/// 10 Mbit/s with a 32 KiB burst.
const LIMIT: Limit = Limit {
    rate: 10_000_000,
    burst: 32 * 1024 * 8,
};

const PORT: u16 = 5201;

fn rtnl(ns: &Path) -> Rtnl {
    Rtnl::open_in(&rete::netns::open(ns).unwrap()).unwrap()
}

fn index(rtnl: &mut Rtnl, name: &str) -> u32 {
    rtnl.link(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no {name}"))
        .index
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mbit(bits_per_sec: f64) -> f64 {
    bits_per_sec / 1e6
}

/// Sends as fast as TCP goes from namespace `from` to `addr` in namespace
/// `to`, and returns the rate the receiver saw over `window` from its first
/// byte, in bits per second.
fn throughput(from: &Path, to: &Path, addr: IpAddr, window: Duration) -> f64 {
    let ns = File::open(to).unwrap();
    let (ready, started) = mpsc::channel();
    let receiver = std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let listener = TcpListener::bind(SocketAddr::new(addr, PORT)).expect("bind receiver");
        listener.set_nonblocking(true).unwrap();
        ready.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("no sender connected: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = vec![0u8; 1 << 16];
        // Bytes after the first read, which only starts the clock.
        let mut start: Option<Instant> = None;
        let mut bytes = 0u64;
        loop {
            match start {
                Some(t) if t.elapsed() >= window => break,
                None if Instant::now() > deadline => panic!("nothing received"),
                _ => {}
            }
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => match start {
                    None => start = Some(Instant::now()),
                    Some(_) => bytes += n as u64,
                },
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("receive: {e}"),
            }
        }
        // Dropping the socket with data unread resets the connection, which
        // stops the sender.
        bytes as f64 * 8.0 / start.unwrap().elapsed().as_secs_f64()
    });
    started
        .recv_timeout(Duration::from_secs(3))
        .expect("receiver started");
    in_ns(from, move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::new(addr, PORT), Duration::from_secs(3))
                .expect("connect to receiver");
        s.set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let buf = vec![0x55u8; 1 << 16];
        let stop = Instant::now() + window + Duration::from_secs(3);
        while Instant::now() < stop {
            match s.write(&buf) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break, // the receiver is done
            }
        }
    });
    receiver.join().expect("receiver")
}

/// Asserts a limited transfer ran at roughly the limit.
fn assert_limited(what: &str, measured: f64) {
    let limit = LIMIT.rate as f64;
    assert!(
        measured > 0.5 * limit && measured < 1.3 * limit,
        "{what}: {:.2} Mbit/s is not roughly the limit of {:.0} Mbit/s",
        mbit(measured),
        mbit(limit)
    );
}

/// Asserts an unlimited transfer ran far faster than the limit.
fn assert_unlimited(what: &str, measured: f64) {
    assert!(
        measured > 10.0 * LIMIT.rate as f64,
        "{what}: {:.2} Mbit/s is not far above the limit",
        mbit(measured)
    );
}

/// The byte count in `tc -s` output of the qdisc starting at `header`.
fn sent_bytes(stats: &str, header: &str) -> u64 {
    let at = stats
        .find(header)
        .unwrap_or_else(|| panic!("no `{header}` in {stats}"));
    stats[at..]
        .split_once("Sent ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count for `{header}` in {stats}"))
}

#[test]
fn shape_limits_what_leaves_a_veth() {
    require_root!();
    let lab = Lab::new("bw-shape");
    let (host, outside) = (&lab.host, &lab.outside);
    let window = Duration::from_secs(2);

    let before = throughput(host, outside, ip(UPLINK_OUTSIDE), Duration::from_secs(1));
    assert_unlimited("host -> container before shaping", before);

    let mut rt = rtnl(host);
    let uplink = index(&mut rt, "uplink");
    rt.shape(uplink, LIMIT).unwrap();
    let qdiscs = lab.sh_host("tc qdisc show dev uplink");
    assert!(
        qdiscs.contains("qdisc tbf 1: root") && qdiscs.contains("rate 10Mbit burst 32Kb lat 25ms"),
        "{qdiscs}"
    );

    let shaped = throughput(host, outside, ip(UPLINK_OUTSIDE), window);
    let reverse = throughput(outside, host, ip(UPLINK_HOST), Duration::from_secs(1));
    eprintln!(
        "tbf on the host veth: host -> container {:.0} Mbit/s unlimited, {:.2} Mbit/s limited; \
         container -> host {:.0} Mbit/s",
        mbit(before),
        mbit(shaped),
        mbit(reverse)
    );
    assert_limited("host -> container through the tbf", shaped);
    assert_unlimited("container -> host, which the tbf does not see", reverse);

    let stats = lab.sh_host("tc -s qdisc show dev uplink");
    assert!(
        sent_bytes(&stats, "qdisc tbf 1: root") > 1_000_000,
        "the transfer should have gone through the tbf: {stats}"
    );
}

#[test]
fn ifb_limits_what_arrives_on_a_veth() {
    require_root!();
    let lab = Lab::new("bw-ifb");
    let (host, outside) = (&lab.host, &lab.outside);
    let window = Duration::from_secs(2);

    let before = throughput(outside, host, ip(UPLINK_HOST), Duration::from_secs(1));
    assert_unlimited("container -> host before shaping", before);

    let mut rt = rtnl(host);
    let uplink = index(&mut rt, "uplink");
    rt.add_ifb("ifb-bw").unwrap();
    let ifb = index(&mut rt, "ifb-bw");
    rt.redirect_ingress(uplink, ifb).unwrap();
    rt.shape(ifb, LIMIT).unwrap();

    let qdiscs = lab.sh_host("tc qdisc show dev uplink");
    assert!(qdiscs.contains("qdisc ingress ffff:"), "{qdiscs}");
    let filters = lab.sh_host("tc filter show dev uplink parent ffff:");
    assert!(
        filters.contains("filter protocol all pref 1 u32")
            && filters.contains("mirred (Egress Redirect to device ifb-bw) stolen"),
        "{filters}"
    );
    let qdiscs = lab.sh_host("ip link show ifb-bw && tc qdisc show dev ifb-bw");
    assert!(
        qdiscs.contains(",UP,")
            && qdiscs.contains("qdisc tbf 1: root")
            && qdiscs.contains("rate 10Mbit burst 32Kb lat 25ms"),
        "{qdiscs}"
    );

    let shaped = throughput(outside, host, ip(UPLINK_HOST), window);
    let reverse = throughput(host, outside, ip(UPLINK_OUTSIDE), Duration::from_secs(1));
    eprintln!(
        "ifb redirect: container -> host {:.0} Mbit/s unlimited, {:.2} Mbit/s limited; \
         host -> container {:.0} Mbit/s",
        mbit(before),
        mbit(shaped),
        mbit(reverse)
    );
    assert_limited("container -> host through the ifb", shaped);
    assert_unlimited("host -> container, which the ifb does not see", reverse);

    let stats = lab.sh_host("tc -s qdisc show dev ifb-bw");
    assert!(
        sent_bytes(&stats, "qdisc tbf 1: root") > 1_000_000,
        "the transfer should have gone through the ifb's tbf: {stats}"
    );
}

/// rete's tbf reads back exactly like the one `tc` makes from the same
/// rate, burst and latency, including a rate over 2^32 bytes/s.
#[test]
fn shape_matches_tc() {
    require_root!();
    let lab = Lab::new("bw-tc");
    let mut rt = rtnl(&lab.host);
    rt.add_ifb("ifb-rete").unwrap();
    rt.add_ifb("ifb-tc").unwrap();
    let ours = index(&mut rt, "ifb-rete");
    let cases = [
        (LIMIT, "rate 10mbit burst 32kb"),
        (
            Limit {
                rate: 1_500_000,
                burst: 15_000 * 8,
            },
            "rate 1500kbit burst 15000",
        ),
        (
            Limit {
                rate: 40_000_000_000,
                burst: 8 << 20,
            },
            "rate 40gbit burst 1mb",
        ),
    ];
    // Each case replaces the previous qdisc, as a changed limit would.
    for (limit, args) in cases {
        rt.shape(ours, limit).unwrap();
        let theirs = lab.sh_host(&format!(
            "tc qdisc replace dev ifb-tc root handle 1: tbf {args} latency 25ms && \
             tc -d qdisc show dev ifb-tc"
        ));
        let mine = lab.sh_host("tc -d qdisc show dev ifb-rete");
        assert_eq!(mine, theirs, "{args}");
        assert_eq!(mine.lines().filter(|l| l.contains("qdisc")).count(), 1);
    }

    // Creating an ifb that exists fails.
    let e = rt.add_ifb("ifb-tc").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");

    // A redirect that cannot be set up leaves no ingress qdisc behind.
    assert!(rt.redirect_ingress(ours, 999_999).is_err());
    let qdiscs = lab.sh_host("tc qdisc show dev ifb-rete");
    assert!(!qdiscs.contains("ingress"), "{qdiscs}");
    let other = index(&mut rt, "ifb-tc");
    rt.redirect_ingress(ours, other).unwrap();
}

/// The `bandwidth` capability of rete's own plugin: the container's ingress
/// and egress are held to their limits, a container without limits is not;
/// DEL removes the ifb, and so does `rete gc` after the namespace vanished.
#[test]
fn cni_bandwidth_capability_limits_both_directions() {
    require_root!();
    let lab = Lab::new("bw-cni");
    let runner = Runner::install(&lab);
    let list = NetList::from_value(json!({
        "cniVersion": "1.1.0",
        "name": "shaped",
        "plugins": [{
            "type": "rete",
            "capabilities": { "bandwidth": true },
            "ipam": { "ranges": [[{ "subnet": "10.99.0.0/24" }]] }
        }]
    }));
    let limit = json!({
        "ingressRate": LIMIT.rate, "ingressBurst": LIMIT.burst,
        "egressRate": LIMIT.rate, "egressBurst": LIMIT.burst
    });
    let (ns_a, ns_b) = (container_ns(&lab, "a"), container_ns(&lab, "b"));
    let rt_a = RuntimeConf::new("a", &ns_a).cap("bandwidth", limit.clone());
    let rt_b = RuntimeConf::new("b", &ns_b);
    let ra = runner.add(&list, &rt_a).unwrap_or_else(|f| panic!("{f}"));
    let rb = runner.add(&list, &rt_b).unwrap_or_else(|f| panic!("{f}"));
    let (a, b) = (ip4_of(&ra), ip4_of(&rb));

    let interfaces = ra["interfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), 4, "bridge, veth, eth0 and the ifb: {ra}");
    let veth = interfaces[1]["name"].as_str().unwrap();
    let ifb = interfaces[3]["name"].as_str().unwrap();
    assert!(ifb.starts_with("rbw-"), "{ra}");
    assert_eq!(rb["interfaces"].as_array().unwrap().len(), 3, "{rb}");
    let qdiscs = lab.sh_host(&format!(
        "tc qdisc show dev {veth}; tc qdisc show dev {ifb}"
    ));
    assert_eq!(
        qdiscs.matches("rate 10Mbit burst 32Kb lat 25ms").count(),
        2,
        "a tbf on the veth and on the ifb: {qdiscs}"
    );
    let window = Duration::from_secs(2);
    let into_a = throughput(&ns_b, &ns_a, a, window);
    let out_of_a = throughput(&ns_a, &ns_b, b, window);
    let local = throughput(&ns_a, &ns_a, a, Duration::from_secs(1));
    eprintln!(
        "b -> a {:.2} Mbit/s, a -> b {:.2} Mbit/s, a -> a {:.0} Mbit/s",
        mbit(into_a),
        mbit(out_of_a),
        mbit(local)
    );
    assert_limited("into the shaped container", into_a);
    assert_limited("out of the shaped container", out_of_a);
    // Inside its own namespace nothing is shaped.
    assert_unlimited("loopback of the shaped container", local);

    // A rate without its burst is refused, naming what to give.
    let ns_c = container_ns(&lab, "c");
    let half = RuntimeConf::new("c", &ns_c).cap("bandwidth", json!({ "egressRate": 1000000 }));
    let f = runner
        .add(&list, &half)
        .expect_err("a rate without a burst");
    assert!(f.msg.contains("egressBurst"), "{f}");
    assert_eq!(f.code, Some(7), "{f}");

    runner.del(&list, &rt_a).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(lab.links_named("rbw-"), Vec::<String>::new());

    // The namespace vanishes under an attachment; gc takes its ifb too.
    runner.add(&list, &rt_a).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(lab.links_named("rbw-").len(), 1);
    rete::netns::remove(&ns_a).unwrap();
    lab.rete_ok(&["gc"]);
    assert_eq!(lab.links_named("rbw-"), Vec::<String>::new());
    runner.del(&list, &rt_b).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(lab.links_named("rete-"), Vec::<String>::new());
}
