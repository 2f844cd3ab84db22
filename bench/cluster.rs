//! Multi-host: TCP throughput across hosts, and the time from agent start
//! to a full mesh, for rete's vxlan and host-gw backends.
//!
//! Each cluster is a lab of its own (bench/lab.rs): an underlay namespace
//! holding a bridge, an etcd namespace running a real etcd (Debian's
//! /usr/bin/etcd, a one-member cluster) and N host namespaces plugged into
//! the bridge by veth pairs (10.77.0.0/24, MTU 1500), each running
//! `rete agent` with its own state, run and netns dirs. `rete cluster init
//! --cidr 10.244.0.0/16 --subnet-len 24` is run once per cluster.
//!
//! 1. Throughput: per backend a 2-host cluster, a container on each host
//!    (`rete create --network cluster`); iperf3 (one TCP stream) from the
//!    container on host 1 to the one on host 2, against the baseline host 1
//!    -> host 2 on their underlay addresses in the same cluster. A
//!    diagnostic case (no target) runs the underlay with the vxlan
//!    containers' MSS (`iperf3 -M`), to separate the smaller packets from
//!    the encapsulation. The cases run interleaved, run after run, their
//!    order rotating; the report gives medians and ratios.
//! 2. Mesh: per backend and size N, a fresh cluster whose N agents are
//!    started at once; the time from just before the first spawn until
//!    every host's kernel has a route to every other host's subnet. Each
//!    host's routes are followed in-process by an rtnetlink socket opened
//!    in its namespace (RTMGRP_IPV4_ROUTE, subscribed before the agents
//!    start), so nothing forks while the agents work; the final state is
//!    checked by a route dump in every host. Also recorded per host: when
//!    its own subnet's route appeared (its cluster network was built, so
//!    its subnet was claimed) and its first peer route; the CPU time of the
//!    agents and of etcd; etcd's request counts (its /metrics).
//!
//! Every namespace is pinned under the lab's directory and unpinned when
//! the lab is dropped (also on error or panic), after every process it
//! started (etcd, agents, iperf3) has been killed. SIGINT/SIGTERM stop the
//! run between steps, which then cleans up the same way. Every wait is
//! bounded in time.
//!
//! Run as root:
//! `cargo build --release --bin rete --example bench_cluster && target/x86_64-unknown-linux-musl/release/examples/bench_cluster`.

#[path = "lab.rs"]
mod lab;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use lab::{cmd_in, ip_batch, median, run, Lab, Ns, Res};

#[derive(Parser)]
#[command(about = "Multi-host: cross-host throughput and time to a full mesh")]
struct Args {
    /// Seconds per iperf3 test
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Runs per throughput case
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Backends for the throughput test; `-nofp` runs agents with
    /// `--fastpath false` (a diagnostic case: routed through the bridge)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "vxlan,host-gw,vxlan-nofp,host-gw-nofp"
    )]
    backends: Vec<String>,
    /// Cluster sizes for the mesh test
    #[arg(long, value_delimiter = ',', default_value = "3,50")]
    mesh_sizes: Vec<usize>,
    /// Backends for the mesh test
    #[arg(long, value_delimiter = ',', default_value = "vxlan,host-gw")]
    mesh_backends: Vec<String>,
    /// Repetitions of each mesh case
    #[arg(long, default_value_t = 3)]
    mesh_runs: usize,
    /// Seconds to wait for a full mesh before giving up on a repetition
    #[arg(long, default_value_t = 180)]
    mesh_timeout: u64,
    /// Skip the throughput test
    #[arg(long)]
    no_throughput: bool,
    /// Skip the mesh test
    #[arg(long)]
    no_mesh: bool,
    #[arg(long)]
    rete: Option<PathBuf>,
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
}

const CIDR_BASE: u32 = 0x0af4_0000; // 10.244.0.0
const CIDR_MASK: u32 = 0xffff_0000; // /16
const SUBNET_LEN: u8 = 24;
const ETCD_IP: &str = "10.77.0.2";
const PORT: u16 = 5201;
const MAX_HOSTS: usize = 200;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn check_stop() -> Res<()> {
    if STOP.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

fn main() {
    let args = Args::parse();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    if let Err(e) = bench(args) {
        eprintln!("bench_cluster: {e}");
        std::process::exit(1);
    }
}

fn bench(args: Args) -> Res<()> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces)".into());
    }
    if args.runs == 0 || args.runs > 30 || args.seconds == 0 || args.seconds > 60 {
        return Err("--runs must be 1..=30 and --seconds 1..=60".into());
    }
    if args.mesh_runs == 0 || args.mesh_runs > 20 || args.mesh_timeout > 600 {
        return Err("--mesh-runs must be 1..=20 and --mesh-timeout at most 600".into());
    }
    if args
        .mesh_sizes
        .iter()
        .any(|&n| !(2..=MAX_HOSTS).contains(&n))
    {
        return Err(format!("--mesh-sizes must be 2..={MAX_HOSTS}"));
    }
    for b in args.backends.iter().chain(&args.mesh_backends) {
        let b = b.strip_suffix("-nofp").unwrap_or(b);
        if b != "vxlan" && b != "host-gw" {
            return Err(format!("unknown backend {b:?}"));
        }
    }
    if !args.etcd.exists() {
        return Err(format!(
            "{} missing (apt-get install etcd-server)",
            args.etcd.display()
        ));
    }
    // A private copy of rete: a concurrent rebuild cannot change it mid-run.
    let top = Lab::new(None, "cluster")?;
    let src = args.rete.clone().unwrap_or_else(lab::default_rete);
    let rete = top.dir.join("rete");
    std::fs::copy(&src, &rete).map_err(|e| format!("copy {}: {e}", src.display()))?;
    let sha = run(std::process::Command::new("sha256sum").arg(&rete), b"")
        .unwrap_or_default()
        .chars()
        .take(16)
        .collect::<String>();
    let commit = run(
        std::process::Command::new("git")
            .args(["-c", "safe.directory=*", "rev-parse", "--short", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
        b"",
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_else(|_| "?".into());
    let dirty = run(
        std::process::Command::new("git")
            .args([
                "-c",
                "safe.directory=*",
                "status",
                "--porcelain",
                "--",
                "src",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
        b"",
    )
    .map(|s| !s.trim().is_empty())
    .unwrap_or(false);
    let env = Env {
        rete,
        etcd: args.etcd.clone(),
    };

    println!("# rete multi-host benchmark");
    println!();
    println!(
        "- rete: commit {commit}{}, binary sha256 {sha}",
        if dirty {
            " + uncommitted changes in src/"
        } else {
            ""
        }
    );
    println!("- machine: {}", lab::machine());
    println!(
        "- etcd: {}",
        run(std::process::Command::new(&args.etcd).arg("--version"), b"")
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("?")
    );
    println!("- load average at start: {}", loadavg());
    println!();

    if !args.no_throughput && !args.backends.is_empty() {
        throughput(&env, &args)?;
    }
    if !args.no_mesh && !args.mesh_sizes.is_empty() && !args.mesh_backends.is_empty() {
        mesh(&env, &args)?;
    }
    println!("- load average at end: {}", loadavg());
    Ok(())
}

struct Env {
    rete: PathBuf,
    etcd: PathBuf,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// The cluster lab.

struct Host {
    name: String,
    ns: Ns,
    dir: PathBuf,
    netns_dir: PathBuf,
    underlay: String,
    agent: Option<usize>,
}

struct Cluster {
    /// Dropped last (fields drop in order): kills every process, unpins.
    hosts: Vec<Host>,
    underlay: Ns,
    etcd_ns: Ns,
    etcd_pid: u32,
    backend: String,
    /// The agents' `--fastpath`.
    fastpath: bool,
    rete: PathBuf,
    lab: Lab,
}

impl Cluster {
    /// The underlay, etcd (started, cluster initialised) and `n` host
    /// namespaces; no agent started yet.
    fn new(env: &Env, tag: &str, n: usize, backend: &str) -> Res<Cluster> {
        let mut lab = Lab::new(None, tag)?;
        let underlay = lab.netns("underlay")?;
        ip_batch(
            &underlay,
            "link set lo up\nlink add ul0 type bridge\nlink set ul0 up\n",
        )?;
        let etcd_ns = lab.netns("etcd")?;
        plug(&underlay, &etcd_ns, ETCD_IP)?;
        let data = lab.subdir("etcd-data")?;
        let client = format!("http://{ETCD_IP}:2379");
        let f = etcd_ns.open()?;
        let mut cmd = cmd_in(&f, env.etcd.to_str().ok_or("etcd path")?);
        cmd.args(["--name", "lab", "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "lab=http://127.0.0.1:2380"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(lab.dir.join("etcd.log")).map_err(|e| e.to_string())?);
        let child = cmd.spawn().map_err(|e| format!("start etcd: {e}"))?;
        let etcd_pid = child.id();
        lab.keep(child);
        drop(f);
        let mut c = Cluster {
            hosts: Vec::new(),
            underlay,
            etcd_ns,
            etcd_pid,
            backend: backend.trim_end_matches("-nofp").to_string(),
            fastpath: !backend.ends_with("-nofp"),
            rete: env.rete.clone(),
            lab,
        };
        let admin = c.lab.subdir("admin")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            check_stop()?;
            if c.rete_in(&c.etcd_ns, &admin, &["node", "ls"]).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd did not answer in 30 s: {}",
                    std::fs::read_to_string(c.lab.dir.join("etcd.log")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        c.rete_in(
            &c.etcd_ns,
            &admin,
            &[
                "cluster",
                "init",
                "--cidr",
                "10.244.0.0/16",
                "--subnet-len",
                &SUBNET_LEN.to_string(),
            ],
        )?;
        // The hosts: one batch for the underlay's ports, one per host.
        let mut ports = String::new();
        for i in 1..=n {
            let name = format!("h{i}");
            let ns = c.lab.netns(&name)?;
            let underlay = format!("10.77.0.{}", 10 + i);
            // Ports are named after the last octet (etcd's is p2).
            ports.push_str(&format!(
                "link add p{o} type veth peer name eth0 netns {}\nlink set p{o} master ul0 up\n",
                ns.path.display(),
                o = 10 + i
            ));
            let dir = c.lab.subdir(&name)?;
            // Under the lab's ns/ directory, so the lab unpins the
            // containers' namespaces too.
            let netns_dir = c.lab.subdir(&format!("ns/{name}-containers"))?;
            c.hosts.push(Host {
                name,
                ns,
                dir,
                netns_dir,
                underlay,
                agent: None,
            });
        }
        ip_batch(&c.underlay, &ports)?;
        for h in &c.hosts {
            ip_batch(
                &h.ns,
                &format!(
                    "link set lo up\nlink set eth0 up\naddr add {}/24 dev eth0\n",
                    h.underlay
                ),
            )?;
        }
        Ok(c)
    }

    fn env(&self, cmd: &mut std::process::Command, dir: &Path, netns_dir: &Path) {
        cmd.env("RETE_STATE_DIR", dir.join("state"))
            .env("RETE_RUN_DIR", dir.join("run"))
            .env("RETE_NETNS_DIR", netns_dir)
            .env("RETE_NETNS_ETC_DIR", dir.join("etc"))
            .env("RETE_RESOLV_CONF", dir.join("upstream-resolv.conf"))
            .env("RETE_ETCD", format!("http://{ETCD_IP}:2379"));
    }

    fn rete_in(&self, ns: &Ns, dir: &Path, args: &[&str]) -> Res<String> {
        let f = ns.open()?;
        let mut cmd = cmd_in(&f, self.rete.to_str().ok_or("rete path")?);
        cmd.args(args);
        self.env(&mut cmd, dir, &dir.join("ns"));
        run(&mut cmd, b"")
    }

    /// rete in host i with its dirs.
    fn rete(&self, i: usize, args: &[&str]) -> Res<String> {
        let h = &self.hosts[i];
        let f = h.ns.open()?;
        let mut cmd = cmd_in(&f, self.rete.to_str().ok_or("rete path")?);
        cmd.args(args);
        self.env(&mut cmd, &h.dir, &h.netns_dir);
        run(&mut cmd, b"")
    }

    /// Starts every agent, one spawn after another; returns the instant
    /// just before the first spawn.
    fn start_agents(&mut self) -> Res<Instant> {
        let files: Vec<File> = self.hosts.iter().map(|h| h.ns.open()).collect::<Res<_>>()?;
        let logs: Vec<File> = self
            .hosts
            .iter()
            .map(|h| File::create(h.dir.join("agent.log")).map_err(|e| e.to_string()))
            .collect::<Res<_>>()?;
        let rete = self.rete.to_str().ok_or("rete path")?.to_string();
        let t0 = Instant::now();
        for (i, (f, log)) in files.iter().zip(logs).enumerate() {
            let h = &self.hosts[i];
            let mut cmd = cmd_in(f, &rete);
            cmd.args(["agent", "--backend", &self.backend, "--node-name", &h.name])
                .args(["--fastpath", if self.fastpath { "true" } else { "false" }])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            self.env(&mut cmd, &h.dir, &h.netns_dir);
            let child = cmd
                .spawn()
                .map_err(|e| format!("start agent {}: {e}", h.name))?;
            let k = self.lab.keep(child);
            self.hosts[i].agent = Some(k);
        }
        Ok(t0)
    }

    fn agent_pids(&mut self) -> Vec<u32> {
        let idx: Vec<usize> = self.hosts.iter().filter_map(|h| h.agent).collect();
        idx.into_iter()
            .map(|k| self.lab.background(k).id())
            .collect()
    }

    /// Fails if an agent has exited.
    fn check_agents(&mut self) -> Res<()> {
        for i in 0..self.hosts.len() {
            let Some(k) = self.hosts[i].agent else {
                continue;
            };
            if let Ok(Some(status)) = self.lab.background(k).try_wait() {
                return Err(format!(
                    "agent of {} exited ({status}): {}",
                    self.hosts[i].name,
                    std::fs::read_to_string(self.hosts[i].dir.join("agent.log"))
                        .unwrap_or_default()
                ));
            }
        }
        Ok(())
    }

    /// A container on host i's cluster network: its namespace and address.
    fn container(&self, i: usize, name: &str) -> Res<(Ns, String)> {
        self.rete(i, &["create", name, "--network", "cluster"])?;
        let v: serde_json::Value = serde_json::from_str(&self.rete(i, &["inspect", name])?)
            .map_err(|e| format!("rete inspect: {e}"))?;
        let ns = v[0]["netns"].as_str().ok_or("inspect: no netns")?;
        let addr = v[0]["endpoints"][0]["addresses"][0]
            .as_str()
            .and_then(|a| a.split('/').next())
            .ok_or("inspect: no address")?;
        Ok((Ns { path: ns.into() }, addr.to_string()))
    }

    /// Counts of etcd's gRPC requests (streams included) by method, from its /metrics.
    fn etcd_requests(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        let Ok(f) = self.etcd_ns.open() else {
            return out;
        };
        let mut cmd = cmd_in(&f, "curl");
        cmd.args(["-sf", "-m", "5", &format!("http://{ETCD_IP}:2379/metrics")]);
        let Ok(text) = run(&mut cmd, b"") else {
            return out;
        };
        for l in text.lines() {
            // The WAL's fsyncs: how many, and their total seconds.
            for (metric, key) in [
                ("etcd_disk_wal_fsync_duration_seconds_count ", "fsyncs"),
                ("etcd_disk_wal_fsync_duration_seconds_sum ", "fsync_seconds"),
            ] {
                if let Some(v) = l.strip_prefix(metric).and_then(|v| v.trim().parse().ok()) {
                    out.insert(key.to_string(), v);
                }
            }
            let Some(rest) = l.strip_prefix("grpc_server_started_total{") else {
                continue;
            };
            let Some(m) = rest
                .split("grpc_method=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
            else {
                continue;
            };
            let v: f64 = l
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            *out.entry(m.to_string()).or_insert(0.0) += v;
        }
        out
    }
}

/// Plugs `ns` into the underlay bridge with address `ip`.
fn plug(underlay: &Ns, ns: &Ns, ip: &str) -> Res<()> {
    let port = format!("p{}", ip.rsplit('.').next().unwrap_or("x"));
    ip_batch(
        underlay,
        &format!(
            "link add {port} type veth peer name eth0 netns {}\nlink set {port} master ul0 up\n",
            ns.path.display()
        ),
    )?;
    ip_batch(
        ns,
        &format!("link set lo up\nlink set eth0 up\naddr add {ip}/24 dev eth0\n"),
    )
}

/// The MTU of `dev` in `ns`.
fn mtu(ns: &Ns, dev: &str) -> Res<u32> {
    let f = ns.open()?;
    let mut cmd = cmd_in(&f, "ip");
    cmd.args(["-o", "link", "show", dev]);
    let out = run(&mut cmd, b"")?;
    out.split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("no mtu in {out}"))
}

// Following routes by rtnetlink.

const RTPROT_KERNEL: u8 = 2;
const RT_TABLE_MAIN: u32 = 254;
const RTN_UNICAST: u8 = 1;
const RTA_DST: u16 = 1;
const RTA_TABLE: u16 = 15;

/// A NETLINK_ROUTE socket in namespace `ns`, subscribed to `groups`.
fn nl_socket(ns: &Ns, groups: u32) -> Res<OwnedFd> {
    let f = ns.open()?;
    std::thread::scope(|s| {
        s.spawn(|| -> Res<OwnedFd> {
            // SAFETY: setns on this short-lived thread only; socket, bind
            // and setsockopt with valid pointers and lengths.
            unsafe {
                if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(format!("setns: {}", std::io::Error::last_os_error()));
                }
                let fd = libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::NETLINK_ROUTE,
                );
                if fd < 0 {
                    return Err(format!("socket: {}", std::io::Error::last_os_error()));
                }
                let fd = OwnedFd::from_raw_fd(fd);
                let mut sa: libc::sockaddr_nl = std::mem::zeroed();
                sa.nl_family = libc::AF_NETLINK as u16;
                sa.nl_groups = groups;
                if libc::bind(
                    fd.as_raw_fd(),
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                ) != 0
                {
                    return Err(format!("bind: {}", std::io::Error::last_os_error()));
                }
                let size: libc::c_int = 4 << 20;
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    &size as *const _ as *const libc::c_void,
                    4,
                );
                let tv = libc::timeval {
                    tv_sec: 2,
                    tv_usec: 0,
                };
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                Ok(fd)
            }
        })
        .join()
        .map_err(|_| "netlink thread panicked".to_string())?
    })
}

/// One route message: (new?, destination, prefix length, protocol) for
/// IPv4 unicast routes of the main table.
fn parse_route(ty: u16, body: &[u8]) -> Option<(bool, u32, u8, u8)> {
    if body.len() < 12 || body[0] as i32 != libc::AF_INET || body[7] != RTN_UNICAST {
        return None;
    }
    let (dst_len, proto) = (body[1], body[5]);
    let mut table = body[4] as u32;
    let mut dst = 0u32;
    let mut off = 12;
    while off + 4 <= body.len() {
        let len = u16::from_ne_bytes([body[off], body[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([body[off + 2], body[off + 3]]);
        if len < 4 || off + len > body.len() {
            break;
        }
        let v = &body[off + 4..off + len];
        match kind {
            RTA_DST if v.len() == 4 => dst = u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
            RTA_TABLE if v.len() == 4 => table = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]),
            _ => {}
        }
        off += (len + 3) & !3;
    }
    if table != RT_TABLE_MAIN {
        return None;
    }
    Some((ty == libc::RTM_NEWROUTE, dst, dst_len, proto))
}

/// Splits a buffer of netlink messages; calls `f(type, body)` for each.
/// Returns true at NLMSG_DONE.
fn each_message(buf: &[u8], mut f: impl FnMut(u16, &[u8])) -> Res<bool> {
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < 16 || off + len > buf.len() {
            break;
        }
        match ty as i32 {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => {
                let code = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap());
                if code != 0 {
                    return Err(format!("netlink error {code}"));
                }
            }
            _ => f(ty, &buf[off + 16..off + len]),
        }
        off += (len + 3) & !3;
    }
    Ok(false)
}

fn in_cidr(dst: u32, len: u8) -> bool {
    len == SUBNET_LEN && dst & CIDR_MASK == CIDR_BASE
}

/// The cluster routes of one host, from a dump: (its own subnet, the peer
/// subnets it routes to).
fn dump_routes(ns: &Ns) -> Res<(Option<u32>, BTreeSet<u32>)> {
    let fd = nl_socket(ns, 0)?;
    let mut req = [0u8; 28];
    req[0..4].copy_from_slice(&28u32.to_ne_bytes());
    req[4..6].copy_from_slice(&libc::RTM_GETROUTE.to_ne_bytes());
    req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_INET as u8;
    // SAFETY: send of a buffer we own.
    if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(format!("netlink send: {}", std::io::Error::last_os_error()));
    }
    let mut own = None;
    let mut peers = BTreeSet::new();
    let mut buf = vec![0u8; 1 << 16];
    for _ in 0..10_000 {
        // SAFETY: recv into a buffer we own; SO_RCVTIMEO bounds the wait.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(format!("netlink recv: {}", std::io::Error::last_os_error()));
        }
        let done = each_message(&buf[..n as usize], |ty, body| {
            if let Some((true, dst, len, proto)) = parse_route(ty, body) {
                if in_cidr(dst, len) {
                    if proto == RTPROT_KERNEL {
                        own = Some(dst);
                    } else {
                        peers.insert(dst);
                    }
                }
            }
        })?;
        if done {
            return Ok((own, peers));
        }
    }
    Err("netlink dump did not end".into())
}

#[derive(Default, Clone)]
struct HostTimes {
    own: Option<Duration>,
    first_peer: Option<Duration>,
    full: Option<Duration>,
}

struct MeshResult {
    full: Duration,
    /// When the last agent had been spawned.
    spawned: Duration,
    hosts: Vec<HostTimes>,
    agents_cpu: f64,
    etcd_cpu: f64,
    machine_busy: f64,
    etcd_requests: BTreeMap<String, f64>,
    overflows: usize,
}

/// CPU seconds (user + system) of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// (busy, total) jiffies of the machine.
fn machine_jiffies() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// Starts every agent at once and follows every host's routes until each
/// has a route to every other host's subnet (or `limit` passes).
fn start_and_wait(c: &mut Cluster, limit: Duration) -> Res<MeshResult> {
    let n = c.hosts.len();
    let socks: Vec<OwnedFd> = c
        .hosts
        .iter()
        .map(|h| nl_socket(&h.ns, libc::RTMGRP_IPV4_ROUTE as u32))
        .collect::<Res<_>>()?;
    let mut peers: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); n];
    let mut times = vec![HostTimes::default(); n];
    let mut overflows = 0;
    let (busy0, total0) = machine_jiffies();
    let t0 = c.start_agents()?;
    let spawned = t0.elapsed();
    let mut buf = vec![0u8; 1 << 16];
    let mut last_check = Instant::now();
    loop {
        let done = times.iter().filter(|t| t.full.is_some()).count();
        if done == n {
            break;
        }
        check_stop()?;
        if t0.elapsed() > limit {
            return Err(format!(
                "no full mesh after {} s: {done} of {n} hosts complete; peers per host: {:?}",
                limit.as_secs(),
                peers.iter().map(BTreeSet::len).collect::<Vec<_>>()
            ));
        }
        if last_check.elapsed() > Duration::from_millis(500) {
            c.check_agents()?;
            last_check = Instant::now();
        }
        let mut fds: Vec<libc::pollfd> = socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll over our own descriptors.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        let now = t0.elapsed();
        for (i, p) in fds.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            // Drain what is queued, bounded.
            for _ in 0..1000 {
                // SAFETY: recv into a buffer we own, non-blocking.
                let got = unsafe {
                    libc::recv(p.fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
                };
                if got < 0 {
                    let e = std::io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) => break,
                        Some(libc::ENOBUFS) => {
                            // Events were lost: take the state from a dump.
                            overflows += 1;
                            let (own, set) = dump_routes(&c.hosts[i].ns)?;
                            if own.is_some() && times[i].own.is_none() {
                                times[i].own = Some(now);
                            }
                            peers[i] = set;
                            continue;
                        }
                        _ => return Err(format!("netlink recv: {e}")),
                    }
                }
                let t = &mut times[i];
                let set = &mut peers[i];
                each_message(&buf[..got as usize], |ty, body| {
                    let Some((new, dst, len, proto)) = parse_route(ty, body) else {
                        return;
                    };
                    if !in_cidr(dst, len) {
                        return;
                    }
                    if proto == RTPROT_KERNEL {
                        if new && t.own.is_none() {
                            t.own = Some(now);
                        }
                    } else if new {
                        set.insert(dst);
                    } else {
                        set.remove(&dst);
                    }
                })?;
            }
            let t = &mut times[i];
            if !peers[i].is_empty() && t.first_peer.is_none() {
                t.first_peer = Some(now);
            }
            if peers[i].len() >= n - 1 && t.full.is_none() {
                t.full = Some(now);
            }
        }
    }
    let full = t0.elapsed();
    let (busy1, total1) = machine_jiffies();
    let agents_cpu = c.agent_pids().into_iter().map(cpu_seconds).sum();
    let etcd_cpu = cpu_seconds(c.etcd_pid);
    // The final state, from a dump in every host: each routes to every
    // other host's own subnet, and to nothing else.
    let dumps: Vec<(Option<u32>, BTreeSet<u32>)> = c
        .hosts
        .iter()
        .map(|h| dump_routes(&h.ns))
        .collect::<Res<_>>()?;
    let owns: BTreeSet<u32> = dumps.iter().filter_map(|d| d.0).collect();
    if owns.len() != n {
        return Err(format!("{} distinct own subnets for {n} hosts", owns.len()));
    }
    for (i, (own, set)) in dumps.iter().enumerate() {
        let mut want = owns.clone();
        want.remove(&own.unwrap_or(0));
        if *set != want {
            return Err(format!(
                "{}: routes to {:?}, want {:?}",
                c.hosts[i].name,
                set.iter().map(|a| Ipv4Addr::from(*a)).collect::<Vec<_>>(),
                want.iter().map(|a| Ipv4Addr::from(*a)).collect::<Vec<_>>()
            ));
        }
    }
    Ok(MeshResult {
        full,
        spawned,
        hosts: times,
        agents_cpu,
        etcd_cpu,
        machine_busy: if total1 > total0 {
            (busy1 - busy0) / (total1 - total0)
        } else {
            f64::NAN
        },
        etcd_requests: c.etcd_requests(),
        overflows,
    })
}

// 1. Throughput.

struct Case {
    name: String,
    what: String,
    lab: usize,
    server: Ns,
    client: Ns,
    target: String,
    mss: Option<u32>,
    gbits: Vec<f64>,
}

fn throughput(env: &Env, args: &Args) -> Res<()> {
    let mut clusters: Vec<Cluster> = Vec::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut mtus = Vec::new();
    for backend in &args.backends {
        check_stop()?;
        eprintln!("throughput: setting up a 2-host {backend} cluster");
        let mut c = Cluster::new(env, &format!("cluster-tp-{backend}"), 2, backend)?;
        start_and_wait(&mut c, Duration::from_secs(60))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0..2 {
            while c.rete(i, &["network", "inspect", "cluster"]).is_err() {
                check_stop()?;
                if Instant::now() > deadline {
                    return Err(format!("{backend}: no cluster network on h{}", i + 1));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let (cli, _) = c.container(0, "c1")?;
        let (srv, srv_ip) = c.container(1, "c2")?;
        let ul_mtu = mtu(&c.hosts[0].ns, "eth0")?;
        let c_mtu = mtu(&cli, "eth0")?;
        mtus.push((backend.clone(), ul_mtu, c_mtu));
        let k = clusters.len();
        cases.push(Case {
            name: format!("underlay ({backend} lab)"),
            what: format!("h1 -> h2 on the underlay, MTU {ul_mtu}"),
            lab: k,
            server: Ns {
                path: c.hosts[1].ns.path.clone(),
            },
            client: Ns {
                path: c.hosts[0].ns.path.clone(),
            },
            target: c.hosts[1].underlay.clone(),
            mss: None,
            gbits: Vec::new(),
        });
        cases.push(Case {
            name: backend.clone(),
            what: format!("container on h1 -> container on h2, MTU {c_mtu}"),
            lab: k,
            server: srv,
            client: cli,
            target: srv_ip,
            mss: None,
            gbits: Vec::new(),
        });
        if backend == "vxlan" {
            cases.push(Case {
                name: "underlay at the overlay's MSS".into(),
                what: format!(
                    "diagnostic: h1 -> h2 on the underlay, iperf3 -M {}",
                    c_mtu - 40
                ),
                lab: k,
                server: Ns {
                    path: c.hosts[1].ns.path.clone(),
                },
                client: Ns {
                    path: c.hosts[0].ns.path.clone(),
                },
                target: c.hosts[1].underlay.clone(),
                mss: Some(c_mtu - 40),
                gbits: Vec::new(),
            });
        }
        clusters.push(c);
    }
    let nc = cases.len();
    for r in 0..args.runs {
        for j in 0..nc {
            check_stop()?;
            let c = &mut cases[(j + r) % nc];
            let cl = &mut clusters[c.lab];
            let g = iperf(
                &mut cl.lab,
                &c.server,
                &c.client,
                &c.target,
                args.seconds,
                c.mss,
            )
            .map_err(|e| format!("{} run {}: {e}", c.name, r + 1))?;
            eprintln!("throughput run {} {}: {g:.2} Gbit/s", r + 1, c.name);
            c.gbits.push(g);
        }
    }
    drop(clusters);

    println!(
        "## Cross-host TCP throughput (iperf3, 1 stream, {} s, {} runs, interleaved)",
        args.seconds, args.runs
    );
    println!();
    for (b, ul, cm) in &mtus {
        println!("- {b}: underlay MTU {ul}, container (cluster network) MTU {cm}");
    }
    println!();
    println!("| case | path | runs (Gbit/s) | median (Gbit/s) | / its lab's underlay | paired (median of per-run ratios) |");
    println!("|---|---|---|---:|---:|---:|");
    let base_of = |c: &Case| -> &Case {
        cases
            .iter()
            .find(|b| b.lab == c.lab && b.name.starts_with("underlay (") && b.mss.is_none())
            .expect("baseline")
    };
    for c in &cases {
        let b = base_of(c);
        let m = median(&c.gbits);
        let paired: Vec<f64> = c.gbits.iter().zip(&b.gbits).map(|(x, y)| x / y).collect();
        println!(
            "| {} | {} | {} | {m:.2} | {:.0}% | {:.0}% |",
            c.name,
            c.what,
            c.gbits
                .iter()
                .map(|g| format!("{g:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            100.0 * m / median(&b.gbits),
            100.0 * median(&paired)
        );
    }
    println!();
    for (name, target) in [("vxlan", 0.85), ("host-gw", 0.95)] {
        if let Some(c) = cases.iter().find(|c| c.name == name) {
            let ratio = median(&c.gbits) / median(&base_of(c).gbits);
            println!(
                "- target {name} >= {:.0}% of the underlay: {} ({:.0}%)",
                100.0 * target,
                if ratio >= target { "met" } else { "NOT met" },
                100.0 * ratio
            );
        }
    }
    println!();
    Ok(())
}

/// One iperf3 test from `client` to `target` where `server` listens; returns
/// the receiver's Gbit/s.
fn iperf(
    lab: &mut Lab,
    server: &Ns,
    client: &Ns,
    target: &str,
    seconds: u32,
    mss: Option<u32>,
) -> Res<f64> {
    let s = server.open()?;
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
    // Read the server's output on a thread, so the wait is bounded.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if l.contains("listening") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        let _ = lab.background(idx).kill();
        let _ = lab.background(idx).wait();
        let _ = reader.join();
        return Err("iperf3 server did not start".into());
    }
    let c = client.open()?;
    let mut cmd = cmd_in(&c, "iperf3");
    cmd.args([
        "-c",
        target,
        "-p",
        &PORT.to_string(),
        "-t",
        &seconds.to_string(),
        "-J",
        "--connect-timeout",
        "3000",
    ]);
    if let Some(m) = mss {
        cmd.args(["-M", &m.to_string()]);
    }
    let json = run(&mut cmd, b"");
    // The server exits after its one test (or is killed if the test failed).
    if json.is_err() {
        let _ = lab.background(idx).kill();
    }
    let _ = lab.background(idx).wait();
    let _ = reader.join();
    let json = json?;
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

// 2. Time to a full mesh.

fn mesh(env: &Env, args: &Args) -> Res<()> {
    let mut results: BTreeMap<(usize, String), Vec<MeshResult>> = BTreeMap::new();
    for r in 0..args.mesh_runs {
        for &n in &args.mesh_sizes {
            for k in 0..args.mesh_backends.len() {
                // Rotate the backends' order run after run.
                let backend = &args.mesh_backends[(k + r) % args.mesh_backends.len()];
                check_stop()?;
                eprintln!("mesh run {}: {n} hosts, {backend}: setting up", r + 1);
                let mut c = Cluster::new(env, &format!("cluster-mesh-{backend}-{n}"), n, backend)?;
                // Let the setup's work settle before the clock starts.
                std::thread::sleep(Duration::from_secs(1));
                let m = start_and_wait(&mut c, Duration::from_secs(args.mesh_timeout))
                    .map_err(|e| format!("mesh {backend} {n} hosts run {}: {e}", r + 1))?;
                eprintln!(
                    "mesh run {}: {n} hosts, {backend}: full mesh in {:.2} s",
                    r + 1,
                    m.full.as_secs_f64()
                );
                results.entry((n, backend.clone())).or_default().push(m);
                drop(c);
                // The kernel frees the namespaces in the background.
                std::thread::sleep(Duration::from_secs(if n > 10 { 5 } else { 1 }));
            }
        }
    }

    println!(
        "## Time from agent start to a full mesh ({} runs per case)",
        args.mesh_runs
    );
    println!();
    println!("All agents spawned at once (t = 0 just before the first spawn); a host is complete when its kernel routes to every other host's subnet. Times in seconds, medians over runs; per-host columns take, in each run, the median (med) or last (max) host, then the median over runs.");
    println!();
    println!("| hosts | backend | full mesh, per run | full mesh (median) | own network ready (med / max host) | first peer route (med host) | host complete (med host) | all agents spawned | agents CPU (s) | etcd CPU (s) | machine busy | etcd Txn / Range / LeaseGrant / Watch | etcd WAL fsyncs (total s) | netlink overflows |");
    println!("|---:|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|---:|");
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN);
    for ((n, backend), ms) in &results {
        let full: Vec<f64> = ms.iter().map(|m| m.full.as_secs_f64()).collect();
        let per_run = |f: &dyn Fn(&HostTimes) -> Option<Duration>, last: bool| -> f64 {
            let v: Vec<f64> = ms
                .iter()
                .map(|m| {
                    let xs: Vec<f64> = m.hosts.iter().map(|h| secs(f(h))).collect();
                    if last {
                        xs.iter().cloned().fold(f64::MIN, f64::max)
                    } else {
                        median(&xs)
                    }
                })
                .collect();
            median(&v)
        };
        let req = |name: &str| -> f64 {
            median(
                &ms.iter()
                    .map(|m| m.etcd_requests.get(name).copied().unwrap_or(f64::NAN))
                    .collect::<Vec<_>>(),
            )
        };
        println!(
            "| {n} | {backend} | {} | **{:.2}** | {:.2} / {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0}% | {:.0} / {:.0} / {:.0} / {:.0} | {:.0} ({:.2}) | {} |",
            full.iter().map(|f| format!("{f:.2}")).collect::<Vec<_>>().join(", "),
            median(&full),
            per_run(&|h| h.own, false),
            per_run(&|h| h.own, true),
            per_run(&|h| h.first_peer, false),
            per_run(&|h| h.full, false),
            median(&ms.iter().map(|m| m.spawned.as_secs_f64()).collect::<Vec<_>>()),
            median(&ms.iter().map(|m| m.agents_cpu).collect::<Vec<_>>()),
            median(&ms.iter().map(|m| m.etcd_cpu).collect::<Vec<_>>()),
            100.0 * median(&ms.iter().map(|m| m.machine_busy).collect::<Vec<_>>()),
            req("Txn"),
            req("Range"),
            req("LeaseGrant"),
            req("Watch"),
            req("fsyncs"),
            req("fsync_seconds"),
            ms.iter().map(|m| m.overflows).sum::<usize>()
        );
    }
    println!();
    // The spread of the own-network times in the largest case, run by run:
    // how the agents' start-up is spread out.
    if let Some(((n, backend), ms)) = results.iter().max_by_key(|((n, _), _)| *n) {
        println!("Own network ready, {n} hosts, {backend}: per run, the hosts' times at the 10th/50th/90th percentile and the last, against the full mesh:");
        println!();
        for (r, m) in ms.iter().enumerate() {
            let mut own: Vec<f64> = m.hosts.iter().map(|h| secs(h.own)).collect();
            own.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let q = |p: f64| own[((own.len() - 1) as f64 * p).round() as usize];
            println!(
                "- run {}: {:.2} / {:.2} / {:.2} / {:.2} s; full mesh {:.2} s",
                r + 1,
                q(0.1),
                q(0.5),
                q(0.9),
                q(1.0),
                m.full.as_secs_f64()
            );
        }
        println!();
    }
    Ok(())
}
