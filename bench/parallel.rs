//! Parallel CNI ADD throughput: 100 ADDs launched at once on one network
//! (100 plugin processes in parallel, each with a container namespace of its
//! own), as a busy node's runtime issues them; then 100 DELs at once.
//!
//! Peers (the same configurations as bench/attach.rs, from bench/cniconf.rs):
//! - rete-cni: one `rete` plugin process per ADD (type rete, host-local style
//!   ranges on 10.200.0.0/16, portMappings capability, disableDns);
//! - cni:      the reference chain per ADD: `bridge` (host-local IPAM, ipMasq),
//!   then `portmap` with the bridge's result as prevResult; DEL runs portmap
//!   then bridge.
//!
//! Each attachment runs in a thread of its own; all threads are released
//! together. The wall time of a round is from the first fork to the last
//! reap (monotonic clock); throughput = attachments / wall time. Every
//! attachment must succeed and get a distinct address; the host namespace
//! must then hold one veth per attachment, and none after the DELs. Each
//! repetition uses a fresh host namespace and fresh container namespaces per
//! peer; the peers alternate (the order flips every repetition).
//!
//! Run as root: `bench/run.sh --parallel-only` or
//! `cargo build --release --bin rete --example bench_parallel && target/x86_64-unknown-linux-musl/release/examples/bench_parallel --reps 3`.

#[path = "cniconf.rs"]
mod cniconf;
#[path = "lab.rs"]
mod lab;

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use lab::{cmd_in, ip_batch, median, ms, run, Lab, Ns, Res};
use serde_json::Value;

#[derive(Parser)]
#[command(about = "Parallel CNI ADD/DEL throughput: rete's plugin vs bridge+host-local+portmap")]
struct Args {
    /// Attachments launched at once
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Repetitions (each with fresh namespaces)
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Peers, comma separated
    #[arg(long, default_value = "rete-cni,cni", value_delimiter = ',')]
    peers: Vec<String>,
    #[arg(long)]
    rete: Option<PathBuf>,
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_path: PathBuf,
    /// Lab directory (default: a new one under the temp dir)
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write every round here as CSV: peer,rep,op,count,wall_ms,per_s,median_ms,max_ms
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Seconds after which the processes still running in a round are killed
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// Processes running in the current round, killed by the watchdog when the
/// round runs past its deadline.
#[derive(Default)]
struct Running {
    pids: Mutex<HashSet<u32>>,
    expired: AtomicBool,
}

/// One plugin process: started just before the fork, ended just after the
/// reap. Returns (start, end, stdout).
fn exec(running: &Running, mut cmd: Command, stdin: &[u8]) -> Res<(Instant, Instant, String)> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawn {:?}: {e}", cmd.get_program()))?;
    let pid = child.id();
    running.pids.lock().unwrap().insert(pid);
    if let Some(mut w) = child.stdin.take() {
        let _ = w.write_all(stdin);
    }
    let out = child.wait_with_output();
    let t1 = Instant::now();
    running.pids.lock().unwrap().remove(&pid);
    let out = out.map_err(|e| format!("wait {:?}: {e}", cmd.get_program()))?;
    if running.expired.load(Ordering::SeqCst) {
        return Err("killed at the round's deadline".into());
    }
    if !out.status.success() {
        return Err(format!(
            "{} {} ({}): {}{}",
            cmd.get_program().to_string_lossy(),
            cmd.get_envs()
                .find(|(k, _)| *k == "CNI_COMMAND")
                .and_then(|(_, v)| v)
                .map(|v| v.to_string_lossy().into_owned())
                .unwrap_or_default(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((t0, t1, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// What one attachment's ADD (or DEL) did: its first fork, its last reap,
/// and the address it got (ADD).
struct Done {
    start: Instant,
    end: Instant,
    address: Option<String>,
    /// What DEL needs: for the chain the portmap configuration, for rete
    /// the ADD result.
    keep: Option<String>,
}

trait Peer: Sync {
    fn host(&self) -> &Ns;
    fn add(&self, running: &Running, i: usize, cns: &Ns) -> Res<Done>;
    fn del(&self, running: &Running, i: usize, cns: &Ns, keep: &str) -> Res<Done>;
}

fn cni_env(cmd: &mut Command, command: &str, i: usize, cns: &Ns, cni_path: &Path) {
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", format!("{i:064x}"))
        .env("CNI_NETNS", &cns.path)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_path);
}

struct ReteCni {
    bin: PathBuf,
    host: Ns,
    dir: PathBuf,
}

impl ReteCni {
    fn plugin(&self, h: &File, command: &str, i: usize, cns: &Ns) -> Command {
        let mut cmd = cmd_in(h, self.bin.to_str().unwrap());
        cni_env(
            &mut cmd,
            command,
            i,
            cns,
            self.bin.parent().unwrap_or(&self.bin),
        );
        cmd.env("RETE_STATE_DIR", self.dir.join("state"))
            .env("RETE_RUN_DIR", self.dir.join("run"))
            .env("RETE_NETNS_DIR", self.dir.join("netns"))
            .env("RETE_NETNS_ETC_DIR", self.dir.join("etc"));
        cmd
    }
}

impl Peer for ReteCni {
    fn host(&self) -> &Ns {
        &self.host
    }
    fn add(&self, running: &Running, i: usize, cns: &Ns) -> Res<Done> {
        let h = self.host.open()?;
        let conf = cniconf::rete_plugin(10000 + i as u16, None);
        let (start, end, out) = exec(running, self.plugin(&h, "ADD", i, cns), conf.as_bytes())?;
        let result: Value =
            serde_json::from_str(&out).map_err(|e| format!("rete result: {e}: {out}"))?;
        Ok(Done {
            start,
            end,
            address: cniconf::first_address(&result),
            keep: Some(result.to_string()),
        })
    }
    fn del(&self, running: &Running, i: usize, cns: &Ns, keep: &str) -> Res<Done> {
        let h = self.host.open()?;
        let prev: Value = serde_json::from_str(keep).map_err(|e| e.to_string())?;
        let conf = cniconf::rete_plugin(10000 + i as u16, Some(&prev));
        let (start, end, _) = exec(running, self.plugin(&h, "DEL", i, cns), conf.as_bytes())?;
        Ok(Done {
            start,
            end,
            address: None,
            keep: None,
        })
    }
}

struct Cni {
    path: PathBuf,
    host: Ns,
    bridge_conf: String,
}

impl Cni {
    fn plugin(&self, h: &File, plugin: &str, command: &str, i: usize, cns: &Ns) -> Command {
        let mut cmd = cmd_in(h, self.path.join(plugin).to_str().unwrap());
        cni_env(&mut cmd, command, i, cns, &self.path);
        cmd
    }
}

impl Peer for Cni {
    fn host(&self) -> &Ns {
        &self.host
    }
    fn add(&self, running: &Running, i: usize, cns: &Ns) -> Res<Done> {
        let h = self.host.open()?;
        let bridge = self.plugin(&h, "bridge", "ADD", i, cns);
        let portmap = self.plugin(&h, "portmap", "ADD", i, cns);
        let (start, _, out) = exec(running, bridge, self.bridge_conf.as_bytes())?;
        let prev: Value =
            serde_json::from_str(&out).map_err(|e| format!("bridge result: {e}: {out}"))?;
        let address = cniconf::first_address(&prev);
        let conf = cniconf::reference_portmap(10000 + i as u16, prev);
        let (_, end, _) = exec(running, portmap, conf.as_bytes())?;
        Ok(Done {
            start,
            end,
            address,
            keep: Some(conf),
        })
    }
    fn del(&self, running: &Running, i: usize, cns: &Ns, keep: &str) -> Res<Done> {
        let h = self.host.open()?;
        let portmap = self.plugin(&h, "portmap", "DEL", i, cns);
        let bridge = self.plugin(&h, "bridge", "DEL", i, cns);
        let (start, _, _) = exec(running, portmap, keep.as_bytes())?;
        let (_, end, _) = exec(running, bridge, self.bridge_conf.as_bytes())?;
        Ok(Done {
            start,
            end,
            address: None,
            keep: None,
        })
    }
}

/// Runs `op` for every attachment at once (one thread each, released
/// together), under a deadline; returns each attachment's outcome.
fn all_at_once(
    count: usize,
    timeout: Duration,
    op: impl Fn(&Running, usize) -> Res<Done> + Sync,
) -> Vec<Res<Done>> {
    let running = Arc::new(Running::default());
    let finished = Arc::new(AtomicBool::new(false));
    let dog = {
        let (running, finished) = (running.clone(), finished.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            while !finished.load(Ordering::SeqCst) {
                if Instant::now() > deadline {
                    running.expired.store(true, Ordering::SeqCst);
                    for pid in running.pids.lock().unwrap().iter() {
                        // SAFETY: plain kill(2) of our own children.
                        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let barrier = Barrier::new(count);
    let out = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=count)
            .map(|i| {
                let (barrier, op, running) = (&barrier, &op, &*running);
                s.spawn(move || {
                    barrier.wait();
                    op(running, i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    finished.store(true, Ordering::SeqCst);
    let _ = dog.join();
    out
}

/// A round's figures.
struct Round {
    wall_ms: f64,
    per_s: f64,
    median_ms: f64,
    max_ms: f64,
}

fn round(done: &[Done]) -> Round {
    let first = done.iter().map(|d| d.start).min().unwrap();
    let last = done.iter().map(|d| d.end).max().unwrap();
    let wall = last - first;
    let each: Vec<f64> = done.iter().map(|d| ms(d.end - d.start)).collect();
    Round {
        wall_ms: ms(wall),
        per_s: done.len() as f64 / wall.as_secs_f64(),
        median_ms: median(&each),
        max_ms: each.iter().cloned().fold(0.0, f64::max),
    }
}

fn veths(ns: &Ns) -> Res<usize> {
    let f = ns.open()?;
    let mut cmd = cmd_in(&f, "ip");
    cmd.args(["-o", "link", "show", "type", "veth"]);
    Ok(run(&mut cmd, b"")?.lines().count())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = bench(args) {
        eprintln!("bench_parallel: {e}");
        std::process::exit(1);
    }
}

fn collect(peer: &str, what: &str, outcomes: Vec<Res<Done>>) -> Res<Vec<Done>> {
    let mut done = Vec::with_capacity(outcomes.len());
    let mut errors = Vec::new();
    for (i, o) in outcomes.into_iter().enumerate() {
        match o {
            Ok(d) => done.push(d),
            Err(e) => errors.push(format!("{} {}: {e}", what, i + 1)),
        }
    }
    if !errors.is_empty() {
        return Err(format!(
            "{peer}: {} of {} {what}s failed; first: {}",
            errors.len(),
            errors.len() + done.len(),
            errors[0]
        ));
    }
    Ok(done)
}

fn bench(args: Args) -> Res<()> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces)".into());
    }
    if args.count == 0 || args.count > 1000 {
        return Err("--count must be between 1 and 1000".into());
    }
    let started = Instant::now();
    let lab = Lab::new(args.dir.clone(), "parallel")?;
    let tag = std::process::id();
    let rete = args.rete.clone().unwrap_or_else(lab::default_rete);
    let timeout = Duration::from_secs(args.timeout);
    eprintln!("machine: {}", lab::machine());
    // (peer, rep, op) -> round
    let mut rounds: Vec<(String, usize, &'static str, Round)> = Vec::new();
    for rep in 1..=args.reps {
        let mut order = args.peers.clone();
        if rep % 2 == 0 {
            order.reverse();
        }
        for name in &order {
            let host = lab.netns(&format!("rp-{name}-{tag}-{rep}"))?;
            ip_batch(&host, "link set lo up")?;
            let peer: Box<dyn Peer> = match name.as_str() {
                "rete-cni" => Box::new(ReteCni {
                    bin: rete.clone(),
                    host,
                    dir: lab.subdir(&format!("rete-cni-{rep}"))?,
                }),
                "cni" => Box::new(Cni {
                    path: args.cni_path.clone(),
                    bridge_conf: cniconf::reference_bridge(
                        &lab.subdir(&format!("cni-ipam-{rep}"))?,
                    ),
                    host,
                }),
                other => return Err(format!("unknown peer {other}")),
            };
            // Untimed: the container namespaces.
            let cns: Vec<Ns> = (1..=args.count)
                .map(|i| lab.netns(&format!("{name}-{rep}-c{i}")))
                .collect::<Res<_>>()?;
            let peer = &*peer;
            let added = collect(
                name,
                "ADD",
                all_at_once(args.count, timeout, |r, i| peer.add(r, i, &cns[i - 1])),
            )?;
            let addresses: BTreeSet<&str> =
                added.iter().filter_map(|d| d.address.as_deref()).collect();
            if addresses.len() != args.count {
                return Err(format!(
                    "{name}: {} distinct addresses for {} attachments",
                    addresses.len(),
                    args.count
                ));
            }
            let n = veths(peer.host())?;
            if n != args.count {
                return Err(format!("{name}: {n} veths after {} ADDs", args.count));
            }
            let add = round(&added);
            let keeps: Vec<String> = added
                .iter()
                .map(|d| d.keep.clone().unwrap_or_default())
                .collect();
            let deleted = collect(
                name,
                "DEL",
                all_at_once(args.count, timeout, |r, i| {
                    peer.del(r, i, &cns[i - 1], &keeps[i - 1])
                }),
            )?;
            let n = veths(peer.host())?;
            if n != 0 {
                return Err(format!("{name}: {n} veths left after the DELs"));
            }
            let del = round(&deleted);
            eprintln!(
                "[{:>6.1} s] rep {rep} {name}: ADD {:.0} ms wall, {:.1}/s ({} distinct addresses); DEL {:.0} ms wall, {:.1}/s",
                started.elapsed().as_secs_f64(),
                add.wall_ms,
                add.per_s,
                addresses.len(),
                del.wall_ms,
                del.per_s
            );
            rounds.push((name.clone(), rep, "ADD", add));
            rounds.push((name.clone(), rep, "DEL", del));
        }
    }

    if let Some(path) = &args.csv {
        let mut out = String::from("peer,rep,op,count,wall_ms,per_s,median_ms,max_ms\n");
        for (p, rep, op, r) in &rounds {
            out.push_str(&format!(
                "{p},{rep},{op},{},{:.3},{:.3},{:.3},{:.3}\n",
                args.count, r.wall_ms, r.per_s, r.median_ms, r.max_ms
            ));
        }
        std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    }

    println!(
        "## Parallel CNI ADD/DEL, {} at once, {} repetitions",
        args.count, args.reps
    );
    println!();
    println!("- machine: {}", lab::machine());
    println!("- run took {:.0} s", started.elapsed().as_secs_f64());
    println!();
    println!("Per round: wall time from the first fork to the last reap, attachments per second (count / wall), and the median and max time of one attachment within the round.");
    println!();
    println!("| peer | op | rep | wall (ms) | per s | one attachment, median (ms) | max (ms) |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (p, rep, op, r) in &rounds {
        println!(
            "| {p} | {op} | {rep} | {:.0} | {:.1} | {:.1} | {:.1} |",
            r.wall_ms, r.per_s, r.median_ms, r.max_ms
        );
    }
    println!();
    println!("Medians over the repetitions:");
    println!();
    println!("| peer | ADD wall (ms) | ADD per s | DEL wall (ms) | DEL per s |");
    println!("|---|---:|---:|---:|---:|");
    let med = |p: &str, op: &str, f: fn(&Round) -> f64| {
        let v: Vec<f64> = rounds
            .iter()
            .filter(|(q, _, o, _)| q == p && *o == op)
            .map(|(_, _, _, r)| f(r))
            .collect();
        median(&v)
    };
    for p in &args.peers {
        println!(
            "| {p} | {:.0} | {:.1} | {:.0} | {:.1} |",
            med(p, "ADD", |r| r.wall_ms),
            med(p, "ADD", |r| r.per_s),
            med(p, "DEL", |r| r.wall_ms),
            med(p, "DEL", |r| r.per_s)
        );
    }
    println!();
    if args.peers.iter().any(|p| p == "rete-cni") && args.peers.iter().any(|p| p == "cni") {
        let (r, c) = (
            med("rete-cni", "ADD", |r| r.per_s),
            med("cni", "ADD", |r| r.per_s),
        );
        let x = r / c;
        println!(
            "- target rete-cni parallel ADD throughput >= 10x the reference chain's: {} ({x:.1}x; {r:.1}/s vs {c:.1}/s)",
            if x >= 10.0 { "met" } else { "NOT met" }
        );
        let (rd, cd) = (
            med("rete-cni", "DEL", |r| r.per_s),
            med("cni", "DEL", |r| r.per_s),
        );
        println!("- DEL throughput: {:.1}x ({rd:.1}/s vs {cd:.1}/s)", rd / cd);
    }
    Ok(())
}
