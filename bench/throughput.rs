//! TCP throughput through rete's data path, against a bare veth pair.
//!
//! Three cases, each an iperf3 test (one TCP stream, `-t SECONDS`), all in
//! namespaces this program creates:
//! 1. baseline: a bare veth pair between two fresh namespaces;
//! 2. bridge: container -> container on one rete bridge network;
//! 3. published: an iperf3 server in a container published with
//!    `-p 5201:5201`, the client in an "outside" namespace joined to rete's
//!    host namespace by a veth uplink, connecting to the host's uplink
//!    address (the fast path's translation at the uplink, straight into
//!    the container; `published-nofp`, a diagnostic, is the same on a
//!    network without the fast path: the host's DNAT, through the bridge).
//!
//! A fourth case, `routed`, is a diagnostic with no target: the client in
//! the outside namespace reaches the server container's own address, routed
//! by the host without NAT (the outside namespace has a route to the
//! network's subnet via the uplink). Against `published` it separates the
//! cost of DNAT from the cost of the extra hop. A fifth, `egress`, also a
//! diagnostic: the client container reaches the outside namespace's
//! address, masqueraded by the host on the way out of its uplink (the
//! host's default route).
//!
//! The cases are interleaved, run after run; the report gives the median of
//! the runs in Gbit/s and its ratio to the baseline's median.
//!
//! Run as root: `bench/run.sh` or
//! `cargo build --release --bin rete --example bench_throughput && target/x86_64-unknown-linux-musl/release/examples/bench_throughput`.

#[path = "lab.rs"]
mod lab;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;

use clap::Parser;
use lab::{cmd_in, ip_batch, median, run, Lab, Ns, Res};

#[derive(Parser)]
#[command(about = "TCP throughput: bare veth vs rete bridge vs rete published port")]
struct Args {
    /// Seconds per iperf3 test
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Runs per case
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long)]
    rete: Option<PathBuf>,
    /// Lab directory (default: a new one under the temp dir)
    #[arg(long)]
    dir: Option<PathBuf>,
}

const PORT: u16 = 5201;
const UPLINK_HOST: &str = "192.0.2.1";
const UPLINK_OUTSIDE: &str = "192.0.2.2";

struct Case {
    name: &'static str,
    what: &'static str,
    server: Ns,
    client: Ns,
    target: String,
    /// The port the client connects to (the server listens on PORT).
    port: u16,
    gbits: Vec<f64>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = bench(args) {
        eprintln!("bench_throughput: {e}");
        std::process::exit(1);
    }
}

fn bench(args: Args) -> Res<()> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces)".into());
    }
    if args.runs == 0 || args.runs > 20 || args.seconds == 0 || args.seconds > 60 {
        return Err("--runs must be 1..=20 and --seconds 1..=60".into());
    }
    let mut lab = Lab::new(args.dir.clone(), "throughput")?;
    let tag = std::process::id();

    // 1. Two fresh namespaces and a veth pair.
    let (a, b) = bare_pair(&lab, &format!("{tag}"), 0)?;

    // 2 and 3. rete's host namespace with an uplink to an outside namespace,
    // a network, a server container publishing the iperf3 port, a client
    // container.
    let host = lab.netns(&format!("rb-tp-host-{tag}"))?;
    let outside = lab.netns(&format!("rb-tp-outside-{tag}"))?;
    ip_batch(
        &host,
        &format!(
            "link set lo up\nlink add uplink type veth peer name wan netns {}\n\
             addr add {UPLINK_HOST}/24 dev uplink\nlink set uplink up\n\
             route add default via {UPLINK_OUTSIDE}\n",
            outside.path.display()
        ),
    )?;
    ip_batch(
        &outside,
        &format!(
            "link set lo up\naddr add {UPLINK_OUTSIDE}/24 dev wan\nlink set wan up\n\
             route add 10.202.0.0/24 via {UPLINK_HOST}\n"
        ),
    )?;
    let rete_dir = lab.subdir("rete")?;
    let rete_bin = args.rete.clone().unwrap_or_else(lab::default_rete);
    let rete_ns_dir = lab.dir.join("ns").join("rete");
    let rete = |args: &[&str]| -> Res<String> {
        let h = host.open()?;
        let mut cmd = cmd_in(&h, rete_bin.to_str().unwrap());
        cmd.args(args)
            .env("RETE_STATE_DIR", rete_dir.join("state"))
            .env("RETE_RUN_DIR", rete_dir.join("run"))
            .env("RETE_NETNS_DIR", &rete_ns_dir)
            .env("RETE_NETNS_ETC_DIR", rete_dir.join("etc"));
        run(&mut cmd, b"")
    };
    let plain = server_and_client(&rete, "", "10.202.0.0/24", PORT, &[])?;
    // The same on a network without the shortcut past the bridge: the
    // kernel's bridge path, for comparison.
    let nofp = server_and_client(
        &rete,
        "nofp",
        "10.205.0.0/24",
        PORT + 2,
        &["-o", "fastpath=false"],
    )?;

    // The bridge case again in a host namespace where br_netfilter is off
    // (bridge-nf-call-ip{,6}tables = 0, as on a host that never loaded
    // br_netfilter): frames switched inside the bridge then skip the
    // inet hooks. A diagnostic that separates the machine's br_netfilter
    // from rete's own path.
    let host_nf0 = lab.netns(&format!("rb-tp-nf0-{tag}"))?;
    {
        let h = host_nf0.open()?;
        let mut cmd = cmd_in(&h, "sysctl");
        cmd.args([
            "-qw",
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-ip6tables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        ]);
        // Absent without br_netfilter: then it is off already.
        let _ = run(&mut cmd, b"");
        ip_batch(&host_nf0, "link set lo up\n")?;
    }
    let rete_nf0 = |args: &[&str]| -> Res<String> {
        let h = host_nf0.open()?;
        let mut cmd = cmd_in(&h, rete_bin.to_str().unwrap());
        cmd.args(args)
            .env("RETE_STATE_DIR", rete_dir.join("state-nf0"))
            .env("RETE_RUN_DIR", rete_dir.join("run-nf0"))
            .env("RETE_NETNS_DIR", &rete_ns_dir)
            .env("RETE_NETNS_ETC_DIR", rete_dir.join("etc-nf0"));
        run(&mut cmd, b"")
    };
    let nf0 = server_and_client(&rete_nf0, "nf0", "10.204.0.0/24", PORT, &[])?;

    // The same again on a host whose uplink carries BIG TCP (IPv4 GSO
    // packets of BIG_TCP bytes, as on a NIC that supports it): a network
    // created now gives its veths that limit. A bare pair with the same
    // limit is the like-for-like baseline.
    let (a2, b2) = bare_pair(&lab, &format!("big-{tag}"), 1)?;
    set_gso(&a2, "veth-a")?;
    set_gso(&b2, "veth-b")?;
    set_gso(&host, "uplink")?;
    let big = server_and_client(&rete, "big", "10.203.0.0/24", PORT + 1, &[])?;

    let bridge_nf = {
        let h = host.open()?;
        let mut cmd = cmd_in(&h, "cat");
        cmd.arg("/proc/sys/net/bridge/bridge-nf-call-iptables");
        run(&mut cmd, b"").unwrap_or_else(|_| "absent".into())
    };

    let mut cases = vec![
        Case {
            name: "baseline",
            what: "bare veth pair between two namespaces",
            server: b.clone(),
            client: a.clone(),
            target: "10.201.0.2".into(),
            port: PORT,
            gbits: Vec::new(),
        },
        Case {
            name: "bridge",
            what: "container -> container on one rete network",
            server: plain.server.clone(),
            client: plain.client.clone(),
            target: plain.server_ip.clone(),
            port: PORT,
            gbits: Vec::new(),
        },
        Case {
            name: "bridge-nofp",
            what: "diagnostic: bridge, on a network with -o fastpath=false (through the bridge)",
            server: nofp.server.clone(),
            client: nofp.client.clone(),
            target: nofp.server_ip.clone(),
            port: PORT,
            gbits: Vec::new(),
        },
        Case {
            name: "bridge-nf0",
            what: "diagnostic: bridge, in a host namespace with bridge-nf-call-iptables = 0",
            server: nf0.server.clone(),
            client: nf0.client.clone(),
            target: nf0.server_ip.clone(),
            port: PORT,
            gbits: Vec::new(),
        },
        Case {
            name: "routed",
            what: "diagnostic, no target: outside -> container address, routed by the host without NAT",
            server: plain.server.clone(),
            client: outside.clone(),
            target: plain.server_ip.clone(),
            port: PORT,
            gbits: Vec::new(),
        },
        Case {
            name: "egress",
            what: "diagnostic, no target: container -> outside address, masqueraded by the host",
            server: outside.clone(),
            client: plain.client.clone(),
            target: UPLINK_OUTSIDE.into(),
            port: PORT,
            gbits: Vec::new(),
        },
        Case {
            name: "published",
            what: "outside -> host uplink address -> published port -> container",
            server: plain.server.clone(),
            client: outside.clone(),
            target: UPLINK_HOST.into(),
            port: PORT,
            gbits: Vec::new(),
        },
        Case {
            name: "published-nofp",
            what: "diagnostic: published, on the network with -o fastpath=false (the host's DNAT and forwarding, the bridge)",
            server: nofp.server.clone(),
            client: outside.clone(),
            target: UPLINK_HOST.into(),
            port: PORT + 2,
            gbits: Vec::new(),
        },
        Case {
            name: "baseline-big",
            what: "like-for-like baseline for the -big cases: a bare veth pair, both ends at the BIG TCP limit",
            server: b2.clone(),
            client: a2.clone(),
            target: "10.201.1.2".into(),
            port: PORT,
            gbits: Vec::new(),
        },
        Case {
            name: "bridge-big",
            what: "bridge, on a network created after the host's uplink took BIG TCP",
            server: big.server.clone(),
            client: big.client.clone(),
            target: big.server_ip.clone(),
            port: PORT,
            gbits: Vec::new(),
        },
        Case {
            name: "egress-big",
            what: "egress, from that network, out of the BIG TCP uplink",
            server: outside.clone(),
            client: big.client.clone(),
            target: UPLINK_OUTSIDE.into(),
            port: PORT,
            gbits: Vec::new(),
        },
        Case {
            name: "published-big",
            what: "published, into that network",
            server: big.server.clone(),
            client: outside.clone(),
            target: UPLINK_HOST.into(),
            port: PORT + 1,
            gbits: Vec::new(),
        },
    ];

    eprintln!("machine: {}", lab::machine());
    for r in 1..=args.runs {
        for c in &mut cases {
            let g =
                iperf(&mut lab, c, args.seconds).map_err(|e| format!("{} run {r}: {e}", c.name))?;
            eprintln!("run {r} {}: {g:.2} Gbit/s", c.name);
            c.gbits.push(g);
        }
    }
    rete(&["rm", "srv", "cli", "srvbig", "clibig"])?;
    rete(&["network", "rm", "tp", "tpbig"])?;
    rete_nf0(&["rm", "srvnf0", "clinf0"])?;
    rete_nf0(&["network", "rm", "tpnf0"])?;
    let base = median(&cases[0].gbits);
    let big_base = median(
        &cases
            .iter()
            .find(|c| c.name == "baseline-big")
            .expect("case")
            .gbits,
    );

    println!(
        "## TCP throughput (iperf3, 1 stream, {} s, {} runs)",
        args.seconds, args.runs
    );
    println!();
    println!("- machine: {}", lab::machine());
    println!(
        "- bridge-nf-call-iptables in rete's host namespace: {}",
        bridge_nf.trim()
    );
    println!();
    println!("| case | path | runs (Gbit/s) | median (Gbit/s) | / baseline |");
    println!("|---|---|---|---:|---:|");
    for c in &cases {
        let m = median(&c.gbits);
        println!(
            "| {} | {} | {} | {m:.2} | {:.0}% |",
            c.name,
            c.what,
            c.gbits
                .iter()
                .map(|g| format!("{g:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            100.0 * m / base
        );
    }
    println!();
    let ratio = |name: &str| {
        let c = cases.iter().find(|c| c.name == name).expect("case");
        median(&c.gbits) / base
    };
    println!(
        "- target bridge >= 95% of baseline: {} ({:.0}%)",
        if ratio("bridge") >= 0.95 {
            "met"
        } else {
            "NOT met"
        },
        100.0 * ratio("bridge")
    );
    println!(
        "- target published >= 90% of baseline: {} ({:.0}%)",
        if ratio("published") >= 0.90 {
            "met"
        } else {
            "NOT met"
        },
        100.0 * ratio("published")
    );
    println!(
        "- with BIG TCP ({BIG_TCP}) on the host's uplink: bridge-big {:.0}% of baseline \
         ({:.0}% of baseline-big), published-big {:.0}%, egress-big {:.0}%",
        100.0 * ratio("bridge-big"),
        100.0 * ratio("bridge-big") * base / big_base,
        100.0 * ratio("published-big"),
        100.0 * ratio("egress-big"),
    );
    Ok(())
}

/// Two fresh namespaces `rb-tp-a-SUFFIX` and `rb-tp-b-SUFFIX` joined by a
/// bare veth pair, 10.201.NET.1 and .2; returns (client side, server side).
fn bare_pair(lab: &Lab, suffix: &str, net: u8) -> Res<(Ns, Ns)> {
    let a = lab.netns(&format!("rb-tp-a-{suffix}"))?;
    let b = lab.netns(&format!("rb-tp-b-{suffix}"))?;
    ip_batch(
        &a,
        &format!(
            "link set lo up\nlink add veth-a type veth peer name veth-b netns {}\n\
             addr add 10.201.{net}.1/24 dev veth-a\nlink set veth-a up\n",
            b.path.display()
        ),
    )?;
    ip_batch(
        &b,
        &format!("link set lo up\naddr add 10.201.{net}.2/24 dev veth-b\nlink set veth-b up\n"),
    )?;
    Ok((a, b))
}

/// An iperf3 server container and a client container on one rete network.
struct Containers {
    server: Ns,
    client: Ns,
    server_ip: String,
}

/// Network `tpSUFFIX` on `subnet`, with containers `srvSUFFIX` (publishing
/// `host_port` to the iperf3 port) and `cliSUFFIX`.
fn server_and_client(
    rete: &dyn Fn(&[&str]) -> Res<String>,
    suffix: &str,
    subnet: &str,
    host_port: u16,
    opts: &[&str],
) -> Res<Containers> {
    let (net, srv, cli) = (
        format!("tp{suffix}"),
        format!("srv{suffix}"),
        format!("cli{suffix}"),
    );
    // No resolver: it is not on the data path, and would only add a
    // background process to the measurement.
    let mut create = vec!["network", "create", &net, "--subnet", subnet];
    create.extend(opts);
    if rete(&["network", "create", "--help"])?.contains("--disable-dns") {
        create.push("--disable-dns");
    }
    rete(&create)?;
    rete(&[
        "create",
        &srv,
        "--network",
        &net,
        "-p",
        &format!("{host_port}:{PORT}"),
    ])?;
    rete(&["create", &cli, "--network", &net])?;
    let inspect: serde_json::Value = serde_json::from_str(&rete(&["inspect", &srv, &cli])?)
        .map_err(|e| format!("rete inspect: {e}"))?;
    let ns_of = |i: usize| -> Res<Ns> {
        let p = inspect[i]["netns"].as_str().ok_or("inspect: no netns")?;
        Ok(Ns { path: p.into() })
    };
    let server_ip = inspect[0]["endpoints"][0]["addresses"][0]
        .as_str()
        .and_then(|a| a.split('/').next())
        .ok_or("inspect: no address")?
        .to_string();
    Ok(Containers {
        server: ns_of(0)?,
        client: ns_of(1)?,
        server_ip,
    })
}

/// The IPv4 GSO limit of BIG TCP devices in this benchmark (what rete's
/// veths take from an uplink with it).
const BIG_TCP: u32 = 196608;

/// Gives `dev` in `ns` the BIG TCP limit.
fn set_gso(ns: &Ns, dev: &str) -> Res<()> {
    let f = ns.open()?;
    let mut rtnl = rete::netlink::Rtnl::open_in(&f).map_err(|e| format!("netlink: {e}"))?;
    let link = rtnl
        .link(dev)
        .map_err(|e| format!("read {dev}: {e}"))?
        .ok_or_else(|| format!("no {dev}"))?;
    rtnl.set_gso_ipv4_max_size(link.index, BIG_TCP)
        .map_err(|e| format!("set gso_ipv4_max_size of {dev}: {e}"))?;
    Ok(())
}

/// One iperf3 test from `client` to `target` where `server` listens; returns
/// the receiver's Gbit/s.
fn iperf(lab: &mut Lab, case: &Case, seconds: u32) -> Res<f64> {
    let s = case.server.open()?;
    let mut cmd = cmd_in(&s, "iperf3");
    // -1: serve one test, then exit; --forceflush: "listening" reaches us now.
    cmd.args(["-s", "-1", "--forceflush", "-p", &PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawn iperf3 server: {e}"))?;
    let out = child.stdout.take().expect("piped");
    let idx = lab.keep(child);
    let mut lines = BufReader::new(out).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("listening") => break,
            Some(Ok(_)) => continue,
            _ => return Err("iperf3 server did not start".into()),
        }
    }
    let c = case.client.open()?;
    let mut cmd = cmd_in(&c, "iperf3");
    cmd.args([
        "-c",
        &case.target,
        "-p",
        &case.port.to_string(),
        "-t",
        &seconds.to_string(),
        "-J",
        "--connect-timeout",
        "3000",
    ]);
    let json = run(&mut cmd, b"")?;
    // The server exits after its one test; drain what it printed.
    for _ in lines.by_ref() {}
    let _ = lab.background(idx).wait();
    let v: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| format!("iperf3 -J output: {e}"))?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| {
            format!(
                "no end.sum_received in iperf3 output: {}",
                &json[..json.len().min(300)]
            )
        })
}
