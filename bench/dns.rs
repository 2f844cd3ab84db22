//! rete's embedded resolver against aardvark-dns (Podman's), serving the
//! same records, loaded by the same client (dnsperf) in the same namespaces.
//!
//! Setup, all in namespaces this program creates: a host namespace where
//! rete makes a network `bench` (10.90.0.0/16) and N containers plus a
//! `client` container. rete's resolver answers on the gateway 10.90.0.1:53;
//! aardvark-dns runs in the same host namespace on 10.90.0.1:5353 with a
//! config listing the same containers (name and 12-character id, as Podman
//! writes it). dnsperf runs inside `client`, a container both servers know.
//! Neither server has a reachable upstream (their resolv.conf names
//! 127.0.0.1 of the host namespace, where nothing listens) and every query
//! is for a local name.
//!
//! Three measurements, interleaved run after run (the order alternates):
//! 1. throughput: dnsperf at full speed (`-c 8 -q 200 -T THREADS`), A
//!    queries for the N names, queries per second, and the server's CPU
//!    time per query;
//! 2. latency: dnsperf at a fixed rate (`-Q RATE`), per-query latencies
//!    from `-v`: p50, p99, max;
//! 3. churn: both servers under a steady `-Q CHURN_RATE` load at once, while
//!    100 containers come and go (at most 10 at a time): rete by
//!    `rete create`/`rete rm`, aardvark by its config file rewritten and
//!    SIGHUP after each of the same changes, as netavark does. Counted:
//!    queries lost (no answer within 1 s) and not NOERROR.
//!
//! Everything shares the machine's CPUs unless `--pin` puts dnsperf on CPU 0
//! and both servers on CPU 1.
//!
//! Run as root: `bench/dns.sh` or
//! `cargo build --release --bin rete --example bench_dns && target/x86_64-unknown-linux-musl/release/examples/bench_dns`.

#[path = "dnsload.rs"]
mod dnsload;
#[path = "lab.rs"]
mod lab;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use lab::{cmd_in, ip_batch, median, run, Lab, Ns, Res};

#[derive(Parser)]
#[command(about = "DNS: rete's resolver vs aardvark-dns, dnsperf as the client")]
struct Args {
    /// Containers whose names both servers serve
    #[arg(long, default_value_t = 100)]
    n: usize,
    /// Seconds per dnsperf test
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Runs per case
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Queries per second of the latency test
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    /// Queries per second to each server during churn
    #[arg(long, default_value_t = 1000)]
    churn_rate: u32,
    /// dnsperf threads in the throughput test (-T)
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Queries the batching client keeps outstanding (as dnsperf's -q)
    #[arg(long, default_value_t = 200)]
    window: usize,
    /// Pin dnsperf to CPU 0 and both servers to CPU 1 (default: the
    /// scheduler places everything, as on a real host)
    #[arg(long)]
    pin: bool,
    #[arg(long)]
    rete: Option<PathBuf>,
    #[arg(long, default_value = "/usr/lib/podman/aardvark-dns")]
    aardvark: PathBuf,
    /// Lab directory (default: a new one under the temp dir)
    #[arg(long)]
    dir: Option<PathBuf>,
}

const SUBNET: &str = "10.90.0.0/16";
const GATEWAY: &str = "10.90.0.1";
const AARDVARK_PORT: u16 = 5353;

fn main() {
    let args = Args::parse();
    if let Err(e) = bench(args) {
        eprintln!("bench_dns: {e}");
        std::process::exit(1);
    }
}

/// Kills the servers (both detach from us) when the benchmark ends, also on
/// error.
struct Servers {
    pidfiles: Vec<PathBuf>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for f in &self.pidfiles {
            if let Some(pid) = read_pid(f) {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn read_pid(f: &Path) -> Option<i32> {
    std::fs::read_to_string(f).ok()?.trim().parse().ok()
}

/// One container as both servers know it.
#[derive(Clone)]
struct Entry {
    name: String,
    id: String,
    ip: String,
}

/// What one dnsperf run reported.
#[derive(Debug, Default, Clone)]
struct Perf {
    sent: u64,
    completed: u64,
    lost: u64,
    noerror: u64,
    /// dnsperf's "Response codes" line.
    codes: String,
    qps: f64,
    avg_ms: f64,
    /// Per-query latencies in ms (with -v only).
    latencies: Vec<f64>,
}

fn parse_perf(out: &str) -> Res<Perf> {
    let mut p = Perf::default();
    let num = |l: &str, key: &str| -> Option<f64> {
        l.trim()
            .strip_prefix(key)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    for l in out.lines() {
        if let Some(rest) = l.strip_prefix("> ") {
            // > NOERROR name A 0.000123
            if let Some(s) = rest
                .split_whitespace()
                .last()
                .and_then(|s| s.parse::<f64>().ok())
            {
                p.latencies.push(s * 1000.0);
            }
            continue;
        }
        if let Some(v) = num(l, "Queries sent:") {
            p.sent = v as u64;
        } else if let Some(v) = num(l, "Queries completed:") {
            p.completed = v as u64;
        } else if let Some(v) = num(l, "Queries lost:") {
            p.lost = v as u64;
        } else if let Some(v) = num(l, "Queries per second:") {
            p.qps = v;
        } else if let Some(v) = num(l, "Average Latency (s):") {
            p.avg_ms = v * 1000.0;
        } else if let Some(rest) = l.trim().strip_prefix("Response codes:") {
            p.codes = rest.trim().to_string();
            p.noerror = rest
                .split_whitespace()
                .skip_while(|w| *w != "NOERROR")
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    if p.sent == 0 {
        return Err(format!("dnsperf sent nothing:\n{out}"));
    }
    Ok(p)
}

/// Datagrams the kernel dropped at the UDP sockets bound to `port` in the
/// namespace `ns` (receive buffer full), from `ss`'s socket memory counters.
fn udp_drops(ns: &Ns, port: u16) -> u64 {
    let Ok(f) = ns.open() else { return 0 };
    let mut cmd = cmd_in(&f, "ss");
    cmd.args(["-Hunam", &format!("sport = :{port}")]);
    let out = run(&mut cmd, b"").unwrap_or_default();
    out.split("skmem:(")
        .skip(1)
        .filter_map(|m| {
            m.split(')')
                .next()?
                .split(',')
                .find_map(|f| f.strip_prefix('d')?.parse::<u64>().ok())
        })
        .sum()
}

/// A counter of the `Udp:` lines of /proc/net/snmp in namespace `ns`
/// (RcvbufErrors, InErrors, SndbufErrors, ...).
fn udp_counter(ns: &Ns, key: &str) -> u64 {
    let Ok(f) = ns.open() else { return 0 };
    let mut cmd = cmd_in(&f, "cat");
    cmd.arg("/proc/net/snmp");
    let snmp = run(&mut cmd, b"").unwrap_or_default();
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    if udp.len() < 2 {
        return 0;
    }
    let keys: Vec<&str> = udp[0].split_whitespace().collect();
    let vals: Vec<&str> = udp[1].split_whitespace().collect();
    keys.iter()
        .position(|k| *k == key)
        .and_then(|i| vals.get(i)?.parse().ok())
        .unwrap_or(0)
}

/// Packets the kernel dropped because a CPU's input backlog was full (the
/// second column of /proc/net/softnet_stat, all CPUs, whole machine).
fn backlog_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

/// Pins every thread of process `pid` to `cpu` (threads it starts later
/// inherit it).
fn pin(pid: i32, cpu: usize) -> Res<()> {
    let tasks =
        std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| format!("pin {pid}: {e}"))?;
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays in bounds for
        // cpu < CPU_SETSIZE.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set)
        };
        if rc != 0 {
            return Err(format!(
                "pin {tid} to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// CPU time (user + system) a process used so far, in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return f64::NAN;
    };
    // Fields 14 and 15 (utime, stime), counted from field 3 after ')'.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn percentile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i]
}

struct Server {
    name: &'static str,
    port: u16,
    pid: i32,
    qps: Vec<f64>,
    /// Server CPU time per query at full speed, in microseconds.
    cpu_us: Vec<f64>,
    /// The same under the batching client (bench/dnsload.rs).
    batch_qps: Vec<f64>,
    batch_cpu_us: Vec<f64>,
    batch_lost: Vec<u64>,
    avg_ms: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    max: Vec<f64>,
    /// Queries lost in the latency runs, and datagrams dropped at the
    /// server's sockets meanwhile.
    lost: Vec<u64>,
    drops: Vec<u64>,
    churn: Option<Perf>,
    /// Datagrams dropped at its sockets during churn; None if it replaced
    /// its sockets meanwhile.
    churn_drops: Option<u64>,
}

impl Server {
    fn new(name: &'static str, port: u16, pid: i32) -> Server {
        Server {
            name,
            port,
            pid,
            qps: vec![],
            cpu_us: vec![],
            batch_qps: vec![],
            batch_cpu_us: vec![],
            batch_lost: vec![],
            avg_ms: vec![],
            p50: vec![],
            p99: vec![],
            max: vec![],
            lost: vec![],
            drops: vec![],
            churn: None,
            churn_drops: None,
        }
    }
}

fn bench(args: Args) -> Res<()> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces)".into());
    }
    if args.runs == 0 || args.runs > 20 || args.seconds == 0 || args.seconds > 60 {
        return Err("--runs must be 1..=20 and --seconds 1..=60".into());
    }
    if args.n == 0 || args.n > 1000 {
        return Err("--n must be 1..=1000".into());
    }
    for tool in ["dnsperf", "unshare"] {
        if std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return Err(format!(
                "missing {tool} (apt-get install dnsperf util-linux)"
            ));
        }
    }
    if !args.aardvark.exists() {
        return Err(format!(
            "{} not found (apt-get install aardvark-dns)",
            args.aardvark.display()
        ));
    }
    let lab = Lab::new(args.dir.clone(), "dns")?;
    let tag = std::process::id();
    let host = lab.netns(&format!("rb-dns-host-{tag}"))?;
    ip_batch(&host, "link set lo up\n")?;

    let rete_dir = lab.subdir("rete")?;
    let rete_bin = args.rete.clone().unwrap_or_else(lab::default_rete);
    let rete_ns_dir = lab.dir.join("ns").join("rete");
    // Nothing listens on the host namespace's loopback: no server can send
    // a query anywhere.
    let no_upstream = lab.dir.join("no-upstream-resolv.conf");
    std::fs::write(&no_upstream, "nameserver 127.0.0.1\n").map_err(|e| e.to_string())?;
    let mut servers_guard = Servers {
        pidfiles: vec![rete_dir.join("run/dns.pid")],
    };
    let rete = |args: &[&str]| -> Res<String> {
        let h = host.open()?;
        let mut cmd = cmd_in(&h, rete_bin.to_str().unwrap());
        cmd.args(args)
            .env("RETE_STATE_DIR", rete_dir.join("state"))
            .env("RETE_RUN_DIR", rete_dir.join("run"))
            .env("RETE_NETNS_DIR", &rete_ns_dir)
            .env("RETE_NETNS_ETC_DIR", rete_dir.join("etc"))
            .env("RETE_RESOLV_CONF", &no_upstream);
        run(&mut cmd, b"")
    };
    let inspect = |name: &str| -> Res<Entry> {
        let v: serde_json::Value = serde_json::from_str(&rete(&["inspect", name])?)
            .map_err(|e| format!("rete inspect: {e}"))?;
        let ip = v[0]["endpoints"][0]["addresses"][0]
            .as_str()
            .and_then(|a| a.split('/').next())
            .ok_or("inspect: no address")?;
        Ok(Entry {
            name: name.to_string(),
            id: v[0]["id"].as_str().ok_or("inspect: no id")?.to_string(),
            ip: ip.to_string(),
        })
    };

    eprintln!("machine: {}", lab::machine());
    eprintln!("creating {} containers ...", args.n);
    rete(&["network", "create", "bench", "--subnet", SUBNET])?;
    let mut entries = Vec::new();
    for i in 0..args.n {
        rete(&["create", &format!("c{i}"), "--network", "bench"])?;
    }
    rete(&["create", "client", "--network", "bench"])?;
    for i in 0..args.n {
        entries.push(inspect(&format!("c{i}"))?);
    }
    entries.push(inspect("client")?);
    let client = Ns {
        path: rete_ns_dir.join("client"),
    };

    // aardvark-dns with the same records, in its own mount namespace whose
    // /etc/resolv.conf has no reachable upstream.
    let aard_dir = lab.subdir("aardvark")?;
    let aard_conf = aard_dir.join("bench");
    write_aardvark(&aard_conf, &entries)?;
    servers_guard.pidfiles.push(aard_dir.join("aardvark.pid"));
    {
        let h = host.open()?;
        let mut cmd = cmd_in(&h, "unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind {} /etc/resolv.conf && exec {} --config {} -p {AARDVARK_PORT} run",
                no_upstream.display(),
                args.aardvark.display(),
                aard_dir.display()
            ));
        // `run` returns once the forked server is ready.
        run(&mut cmd, b"")?;
    }
    let aard_pid = read_pid(&aard_dir.join("aardvark.pid")).ok_or("aardvark.pid missing")?;
    let aard_version = {
        let mut cmd = std::process::Command::new(&args.aardvark);
        cmd.arg("--version");
        run(&mut cmd, b"").unwrap_or_default().trim().to_string()
    };

    let names = lab.dir.join("names.txt");
    let mut q = String::new();
    for e in &entries[..args.n] {
        let _ = writeln!(q, "{} A", e.name);
    }
    std::fs::write(&names, q).map_err(|e| e.to_string())?;
    let query_names: Vec<String> = entries[..args.n].iter().map(|e| e.name.clone()).collect();
    let stable = lab.dir.join("stable.txt");
    std::fs::write(&stable, "c0 A\n").map_err(|e| e.to_string())?;

    let rete_pid = read_pid(&rete_dir.join("run/dns.pid")).ok_or("rete's dns.pid missing")?;
    // With --pin, the client on one CPU and the servers on another: each
    // server gets a CPU of its own instead of sharing both with dnsperf.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (client_cpu, server_cpu) = if cpus >= 2 { (0, 1) } else { (0, 0) };
    if args.pin {
        pin(rete_pid, server_cpu)?;
        pin(aard_pid, server_cpu)?;
    }
    let client_cpus = if args.pin {
        client_cpu.to_string()
    } else {
        format!("0-{}", cpus - 1)
    };

    let dnsperf = |port: u16, file: &Path, extra: &[String]| -> Res<Perf> {
        let f = client.open()?;
        let mut cmd = cmd_in(&f, "taskset");
        cmd.args(["-c", &client_cpus, "dnsperf"]);
        cmd.args(["-s", GATEWAY, "-p", &port.to_string(), "-d"])
            .arg(file)
            .args(["-t", "1"])
            .args(extra);
        parse_perf(&run(&mut cmd, b"")?)
    };

    // Both answer every name, before anything is measured.
    let mut servers = [
        Server::new("rete", 53, rete_pid),
        Server::new("aardvark-dns", AARDVARK_PORT, aard_pid),
    ];
    for s in &servers {
        let p = dnsperf(s.port, &names, &["-n".into(), "1".into()])?;
        if p.noerror != args.n as u64 || p.lost != 0 {
            return Err(format!(
                "{} did not answer all {} names: {p:?}",
                s.name, args.n
            ));
        }
    }

    let secs = args.seconds.to_string();
    for r in 0..args.runs {
        let order: Vec<usize> = if r % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        for &i in &order {
            let s = &mut servers[i];
            let cpu0 = cpu_seconds(s.pid);
            let drops0 = udp_drops(&host, s.port);
            let p = dnsperf(
                s.port,
                &names,
                &[
                    "-l".into(),
                    secs.clone(),
                    "-c".into(),
                    "8".into(),
                    "-q".into(),
                    "200".into(),
                    "-T".into(),
                    args.threads.to_string(),
                ],
            )?;
            let cpu_us = (cpu_seconds(s.pid) - cpu0) * 1e6 / p.sent as f64;
            let drops = udp_drops(&host, s.port).saturating_sub(drops0);
            eprintln!(
                "run {}: {:>12} throughput {:>9.0} qps (avg {:.3} ms, lost {}, dropped at the socket {drops}, server CPU {cpu_us:.1} us/query)",
                r + 1,
                s.name,
                p.qps,
                p.avg_ms,
                p.lost
            );
            s.cpu_us.push(cpu_us);
            s.qps.push(p.qps);
            s.avg_ms.push(p.avg_ms);
        }
        for &i in &order {
            let s = &mut servers[i];
            let cpu0 = cpu_seconds(s.pid);
            let load = dnsload::run(
                client.open()?,
                args.pin.then_some(client_cpu),
                std::net::SocketAddr::new(GATEWAY.parse().unwrap(), s.port),
                query_names.clone(),
                args.window,
                Duration::from_secs(args.seconds as u64),
            )?;
            let cpu_us = (cpu_seconds(s.pid) - cpu0) * 1e6 / load.sent.max(1) as f64;
            eprintln!(
                "run {}: {:>12} batching client {:>9.0} qps (sent {}, answered {}, lost {}, server CPU {cpu_us:.1} us/query)",
                r + 1,
                s.name,
                load.qps,
                load.sent,
                load.answered,
                load.lost
            );
            s.batch_qps.push(load.qps);
            s.batch_cpu_us.push(cpu_us);
            s.batch_lost.push(load.lost);
        }
        for &i in &order {
            let s = &mut servers[i];
            let drops0 = udp_drops(&host, s.port);
            let client0 = udp_counter(&client, "RcvbufErrors");
            let snd0 = udp_counter(&host, "SndbufErrors");
            let backlog0 = backlog_drops();
            let p = dnsperf(
                s.port,
                &names,
                &[
                    "-l".into(),
                    secs.clone(),
                    "-Q".into(),
                    args.rate.to_string(),
                    "-v".into(),
                ],
            )?;
            let (p50, p99, max) = (
                percentile(&p.latencies, 0.5),
                percentile(&p.latencies, 0.99),
                percentile(&p.latencies, 1.0),
            );
            let drops = udp_drops(&host, s.port) - drops0;
            let client_drops = udp_counter(&client, "RcvbufErrors") - client0;
            let snd = udp_counter(&host, "SndbufErrors") - snd0;
            let backlog = backlog_drops() - backlog0;
            eprintln!(
                "run {}: {:>12} at {} qps: p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms, lost {}, dropped at the socket {drops}, at the client {client_drops}, send errors {snd}, backlog drops (machine) {backlog}",
                r + 1,
                s.name,
                args.rate,
                p.lost
            );
            s.lost.push(p.lost);
            s.drops.push(drops);
            s.p50.push(p50);
            s.p99.push(p99);
            s.max.push(max);
        }
    }

    // Churn: both servers loaded at once while the same changes reach each.
    eprintln!(
        "churn: 100 containers come and go under {} qps each ...",
        args.churn_rate
    );
    let start = |port: u16| -> Res<Child> {
        let f = client.open()?;
        let mut cmd = cmd_in(&f, "taskset");
        cmd.args(["-c", &client_cpus, "dnsperf"]);
        cmd.args(["-s", GATEWAY, "-p", &port.to_string(), "-d"])
            .arg(&stable)
            .args(["-t", "1", "-l", "300", "-Q", &args.churn_rate.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd.spawn().map_err(|e| format!("dnsperf: {e}"))
    };
    let drops0 = [udp_drops(&host, 53), udp_drops(&host, AARDVARK_PORT)];
    let loads = [start(53)?, start(AARDVARK_PORT)?];
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let mut live: Vec<Entry> = entries.clone();
    let mut churn_err = None;
    let step = |live: &mut Vec<Entry>, add: Option<usize>, remove: Option<usize>| -> Res<()> {
        if let Some(i) = add {
            let name = format!("x{i}");
            rete(&["create", &name, "--network", "bench"])?;
            live.push(inspect(&name)?);
            reload_aardvark(&aard_conf, live, aard_pid)?;
        }
        if let Some(i) = remove {
            let name = format!("x{i}");
            rete(&["rm", &name])?;
            live.retain(|e| e.name != name);
            reload_aardvark(&aard_conf, live, aard_pid)?;
        }
        Ok(())
    };
    for i in 0..100 {
        let remove = (i >= 10).then(|| i - 10);
        if let Err(e) = step(&mut live, Some(i), remove) {
            churn_err = Some(e);
            break;
        }
    }
    if churn_err.is_none() {
        for i in 90..100 {
            if let Err(e) = step(&mut live, None, Some(i)) {
                churn_err = Some(e);
                break;
            }
        }
    }
    let churn_time = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let mut outs = Vec::new();
    for c in loads {
        // SIGINT: dnsperf stops sending, waits for what is outstanding
        // (up to -t) and prints its statistics.
        unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        let out = c.wait_with_output().map_err(|e| format!("dnsperf: {e}"))?;
        outs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    if let Some(e) = churn_err {
        return Err(e);
    }
    for ((s, out), d0) in servers.iter_mut().zip(&outs).zip(drops0) {
        let p = parse_perf(out)?;
        // A server that replaced its sockets restarted their counters.
        let d1 = udp_drops(&host, s.port);
        s.churn_drops = (d1 >= d0).then(|| d1 - d0);
        eprintln!(
            "churn: {:>12} sent {}, completed {}, lost {}, dropped at the socket {:?}, response codes: {}",
            s.name, p.sent, p.completed, p.lost, s.churn_drops, p.codes
        );
        s.churn = Some(p);
    }

    // The report.
    let rete_v = &servers[0];
    let aard = &servers[1];
    println!("## DNS: rete's resolver vs aardvark-dns");
    println!();
    println!("- machine: {}", lab::machine());
    println!(
        "- records: {} containers (name + 12-char id) on one network; queries: A for each name, from a container both servers know",
        args.n
    );
    println!(
        "- aardvark-dns: {} ({})",
        args.aardvark.display(),
        aard_version
    );
    println!(
        "- throughput: dnsperf -c 8 -q 200 -T {} -l {}; latency: dnsperf -Q {} -l {} -v; {} runs each, medians",
        args.threads, args.seconds, args.rate, args.seconds, args.runs
    );
    if args.pin {
        println!(
            "- --pin: dnsperf pinned to CPU {client_cpu}, both servers (all threads) to CPU {server_cpu}"
        );
    } else {
        println!("- not pinned: dnsperf and the servers share all {cpus} CPUs");
    }
    println!();
    println!("| server | qps | server CPU per query (us) | avg latency at full speed (ms) | p50 at {} qps (ms) | p99 (ms) | max (ms) | lost at {} qps (all runs) |", args.rate, args.rate);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for s in &servers {
        println!(
            "| {} | {:.0} | {:.1} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
            s.name,
            median(&s.qps),
            median(&s.cpu_us),
            median(&s.avg_ms),
            median(&s.p50),
            median(&s.p99),
            median(&s.max),
            s.lost.iter().sum::<u64>()
        );
    }
    println!();
    println!(
        "- rete / aardvark-dns: {:.2}x the queries per second, p99 {:.2}x (lower is better)",
        median(&rete_v.qps) / median(&aard.qps),
        median(&rete_v.p99) / median(&aard.p99)
    );
    let ratios: Vec<f64> = rete_v
        .qps
        .iter()
        .zip(&aard.qps)
        .map(|(r, a)| r / a)
        .collect();
    println!(
        "- rete / aardvark-dns per run (the two measured back to back): {}; median {:.2}x",
        ratios
            .iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(", "),
        median(&ratios)
    );
    println!(
        "- per run, qps: rete {:?}, aardvark-dns {:?}",
        rounded(&rete_v.qps),
        rounded(&aard.qps)
    );
    println!();
    println!(
        "Batching client (bench/dnsload.rs: one UDP socket, {} queries outstanding, sendmmsg/recvmmsg of up to 64; a query counts when a NOERROR answer with its ID comes back; 1 s timeout), {} s per run:",
        args.window, args.seconds
    );
    println!();
    println!("| server | qps | server CPU per query (us) | lost (all runs) |");
    println!("|---|---:|---:|---:|");
    for s in &servers {
        println!(
            "| {} | {:.0} | {:.1} | {} |",
            s.name,
            median(&s.batch_qps),
            median(&s.batch_cpu_us),
            s.batch_lost.iter().sum::<u64>()
        );
    }
    let batch_ratios: Vec<f64> = rete_v
        .batch_qps
        .iter()
        .zip(&aard.batch_qps)
        .map(|(r, a)| r / a)
        .collect();
    println!();
    println!(
        "- rete / aardvark-dns with the batching client: {:.2}x the median qps; per run {}; median {:.2}x",
        median(&rete_v.batch_qps) / median(&aard.batch_qps),
        batch_ratios
            .iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(", "),
        median(&batch_ratios)
    );
    println!(
        "- per run, qps: rete {:?}, aardvark-dns {:?}",
        rounded(&rete_v.batch_qps),
        rounded(&aard.batch_qps)
    );
    println!();
    println!(
        "Churn: 100 containers created and removed (at most 10 at a time, 200 record changes in {:.1} s), both servers under {} qps of A queries for a stable name at once, 1 s timeout:",
        churn_time.as_secs_f64(),
        args.churn_rate
    );
    println!();
    println!("| server | queries sent | answered | lost (no answer in 1 s) | dropped at the server's socket | response codes |");
    println!("|---|---:|---:|---:|---:|---|");
    for s in &servers {
        let p = s.churn.as_ref().unwrap();
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            s.name,
            p.sent,
            p.completed,
            p.lost,
            s.churn_drops
                .map_or("sockets replaced".to_string(), |d| d.to_string()),
            p.codes
        );
    }
    println!();
    println!("(A query still in flight when dnsperf is stopped counts as sent, neither answered nor lost.)");
    drop(servers_guard);
    Ok(())
}

fn rounded(xs: &[f64]) -> Vec<u64> {
    xs.iter().map(|x| x.round() as u64).collect()
}

/// aardvark-dns's config for one network: the gateway, then one line per
/// container: `ID IPV4 IPV6 NAMES` (IPV6 empty, names comma-separated).
fn write_aardvark(path: &Path, entries: &[Entry]) -> Res<()> {
    let mut s = format!("{GATEWAY}\n");
    for e in entries {
        let _ = writeln!(s, "{} {}  {},{}", e.id, e.ip, e.name, &e.id[..12]);
    }
    // Whole files only: written beside the config dir (where aardvark-dns
    // would read it as another network) and renamed over.
    let dir = path.parent().ok_or("config path")?;
    let tmp = dir.with_extension("tmp");
    std::fs::write(&tmp, s).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

fn reload_aardvark(path: &Path, entries: &[Entry], pid: i32) -> Res<()> {
    write_aardvark(path, entries)?;
    // SAFETY: plain kill(2) of the aardvark-dns we started.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err("aardvark-dns is gone".into());
    }
    Ok(())
}
