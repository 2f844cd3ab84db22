//! Attach/detach latency of rete against its peers, side by side in one run.
//!
//! attach = one container: a veth pair (host end on the network's bridge),
//! an address, a default route, masquerading and one published TCP port,
//! done by whole processes; detach = its removal. Each peer works in a host
//! namespace of its own; every container namespace is created beforehand
//! (not timed) the same way for every peer. Containers 1..=N are attached one
//! after another, the peers interleaved (the order rotates with each
//! container so none always goes first), then detached in the same order.
//! Between two commands, untimed, the bench waits for the processes a
//! command left behind (rete's, finishing a deletion's kernel work after
//! rete returned) to end, so that no peer's work lands in the next sample.
//!
//! Peers:
//! - rete:     `rete create cI --network bench -p (10000+I):80 --netns PATH` / `rete rm cI`
//! - rete-own: `rete create cI --network bench -p (10000+I):80` / `rete rm cI`:
//!   rete makes the container's namespace itself (timed, where the others
//!   get it made) and `rete rm` deletes the veth pair from inside it and
//!   drops it; the lab's namespace goes unused
//! - netavark: `netavark --config DIR --rootless false setup PATH` (Podman's JSON on
//!   stdin, NETAVARK_FW=iptables) / `... teardown PATH`
//! - cni:      `bridge` (host-local IPAM, ipMasq) then `portmap` (prevResult = the
//!   bridge result), CNI 0.4.0 / DEL in reverse order
//! - floor:    `ip -batch -` in the host namespace (veth into the container, on
//!   the bridge, up) + `ip -batch -` in the container (address, links up,
//!   default route) / one `ip link del`. No NAT, no published port: a floor.
//! - rete-cni: rete as a CNI plugin (`type: rete`, the same subnet and
//!   portMappings capability as the chain), one process for ADD / one for DEL
//! - rete-netavark: rete invoked as `netavark` (a symlink), given the same
//!   JSON and command line as the netavark peer
//!
//! Run as root: `bench/run.sh` or
//! `cargo build --release --bin rete --example bench_attach && target/x86_64-unknown-linux-musl/release/examples/bench_attach --n 1000`.

#[path = "cniconf.rs"]
mod cniconf;
#[path = "lab.rs"]
mod lab;

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use cniconf::{GATEWAY, SUBNET};
use lab::{cmd_in, ip_batch, median, ms, run, timed, Lab, Ns, Res};

#[derive(Parser)]
#[command(
    about = "Attach/detach latency: rete (CLI, CNI plugin, as netavark) vs netavark vs CNI plugins vs a bare `ip` floor"
)]
struct Args {
    /// Containers attached one after another per peer
    #[arg(long, default_value_t = 100)]
    n: usize,
    /// Peers to run, comma separated
    #[arg(
        long,
        default_value = "rete,rete-own,rete-cni,rete-netavark,netavark,cni,floor",
        value_delimiter = ','
    )]
    peers: Vec<String>,
    /// How many of the first and of the last samples make the growth medians
    #[arg(long, default_value_t = 20)]
    window: usize,
    #[arg(long)]
    rete: Option<PathBuf>,
    #[arg(long, default_value = "/usr/lib/podman/netavark")]
    netavark: PathBuf,
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_path: PathBuf,
    /// Lab directory (default: a new one under the temp dir)
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Leave name resolution on for rete's network (its default), to measure
    /// what the resolver costs; the peers resolve no names
    #[arg(long)]
    rete_dns: bool,
    /// Write every sample here as CSV: peer,op,i,ms
    #[arg(long)]
    csv: Option<PathBuf>,
}

/// The address of container `i` (1-based) in 10.200.0.0/16: 10.200.0.2 onwards.
fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 1)) + i as u32)
}

trait Peer {
    fn name(&self) -> &'static str;
    fn host(&self) -> &Ns;
    /// Attaches container `i` whose namespace is `cns`; returns the time taken.
    fn attach(&mut self, i: usize, cns: &Ns) -> Res<Duration>;
    fn detach(&mut self, i: usize, cns: &Ns) -> Res<Duration>;
    fn version(&self) -> String;
    /// The namespace container `i` ended up in: `given`, unless the peer
    /// makes its own.
    fn container_ns(&self, _i: usize, given: &Ns) -> Ns {
        Ns {
            path: given.path.clone(),
        }
    }
    /// Untimed cleanup after every container was detached.
    fn finish(&mut self) -> Res<()> {
        Ok(())
    }
}

// ---- rete ----

struct Rete {
    bin: PathBuf,
    host: Ns,
    dir: PathBuf,
    /// Whether the network resolves names (a rete without --disable-dns).
    dns: bool,
    /// Whether rete makes each container's namespace itself (`rete create`
    /// as a user runs it; `rete rm` then drops it) rather than attaching to
    /// the lab's (`--netns`, as a runtime calls it).
    own_netns: bool,
    /// Containers attached now (rete-own waits for the kernel's teardown).
    attached: usize,
    /// rete-own: ms from the start of each `rm` until the kernel had
    /// deleted the veth pair.
    settled: Vec<f64>,
}

impl Rete {
    fn new(lab: &Lab, bin: PathBuf, tag: &str, keep_dns: bool, own_netns: bool) -> Res<Self> {
        let role = if own_netns { "rete-own" } else { "rete" };
        let host = lab.netns(&format!("rb-{role}-{tag}"))?;
        ip_batch(&host, "link set lo up")?;
        let mut r = Rete {
            bin,
            host,
            dir: lab.subdir(role)?,
            dns: true,
            own_netns,
            attached: 0,
            settled: Vec::new(),
        };
        // The peers resolve no names (netavark gets dns_enabled: false, the
        // CNI chain has no DNS), so rete's network has no resolver either,
        // where this rete has one.
        let mut args = vec!["network", "create", "bench", "--subnet", SUBNET];
        if !keep_dns
            && r.run(&["network", "create", "--help"])?
                .contains("--disable-dns")
        {
            args.push("--disable-dns");
            r.dns = false;
        }
        r.run(&args)?;
        Ok(r)
    }

    fn cmd(&self, h: &File, args: &[&str]) -> Command {
        let mut cmd = cmd_in(h, self.bin.to_str().unwrap());
        cmd.args(args)
            .env("RETE_STATE_DIR", self.dir.join("state"))
            .env("RETE_RUN_DIR", self.dir.join("run"))
            .env("RETE_NETNS_DIR", self.dir.join("netns"))
            .env("RETE_NETNS_ETC_DIR", self.dir.join("etc"));
        cmd
    }

    fn run(&self, args: &[&str]) -> Res<String> {
        let h = self.host.open()?;
        run(&mut self.cmd(&h, args), b"")
    }
}

impl Peer for Rete {
    fn name(&self) -> &'static str {
        if self.own_netns {
            "rete-own"
        } else {
            "rete"
        }
    }
    fn host(&self) -> &Ns {
        &self.host
    }
    fn attach(&mut self, i: usize, cns: &Ns) -> Res<Duration> {
        let h = self.host.open()?;
        let (name, port) = (format!("c{i}"), format!("{}:80", 10000 + i));
        let path = cns.path.to_str().unwrap();
        let mut args = vec!["create", &name, "--network", "bench", "-p", &port];
        if !self.own_netns {
            args.extend(["--netns", path]);
        }
        let mut cmd = self.cmd(&h, &args);
        let dt = timed(&mut cmd, b"").map(|r| r.0)?;
        self.attached += 1;
        Ok(dt)
    }
    fn container_ns(&self, i: usize, given: &Ns) -> Ns {
        match self.own_netns {
            true => Ns {
                path: self.dir.join("netns").join(format!("c{i}")),
            },
            false => Ns {
                path: given.path.clone(),
            },
        }
    }
    fn detach(&mut self, i: usize, _: &Ns) -> Res<Duration> {
        let h = self.host.open()?;
        let mut cmd = self.cmd(&h, &["rm", &format!("c{i}")]);
        let t0 = Instant::now();
        let dt = timed(&mut cmd, b"").map(|r| r.0)?;
        self.attached -= 1;
        if self.own_netns {
            // Untimed: wait for the kernel to finish the namespace's
            // teardown, so that its work does not land in the next peer's
            // sample; record when it had.
            let deadline = Instant::now() + Duration::from_secs(5);
            while veths(&self.host)? > self.attached && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.settled.push(ms(t0.elapsed()));
        }
        Ok(dt)
    }
    fn version(&self) -> String {
        let v = self
            .run(&["--version"])
            .unwrap_or_default()
            .trim()
            .to_string();
        if self.dns {
            v
        } else {
            format!("{v} (network created with --disable-dns)")
        }
    }
    fn finish(&mut self) -> Res<()> {
        if !self.settled.is_empty() {
            self.settled.sort_by(f64::total_cmp);
            eprintln!(
                "rete-own: the kernel had deleted the veth pair a median {:.2} ms after `rm` began (untimed wait, {} samples)",
                self.settled[self.settled.len() / 2],
                self.settled.len()
            );
        }
        // Removing the network also ends any helper rete started for it.
        self.run(&["network", "rm", "bench"]).map(drop)
    }
}

// ---- netavark, and rete invoked as netavark ----

struct Netavark {
    name: &'static str,
    bin: PathBuf,
    host: Ns,
    config: PathBuf,
    env: Vec<(&'static str, PathBuf)>,
}

impl Netavark {
    fn new(lab: &Lab, bin: PathBuf, tag: &str) -> Res<Self> {
        let host = lab.netns(&format!("rb-netavark-{tag}"))?;
        ip_batch(&host, "link set lo up")?;
        Ok(Netavark {
            name: "netavark",
            bin,
            host,
            config: lab.subdir("netavark")?,
            // 1.4 has no --firewall-driver; this is what it picks without
            // firewalld.
            env: vec![("NETAVARK_FW", "iptables".into())],
        })
    }

    /// rete as Podman's backend: a symlink named `netavark` to the rete
    /// binary, called exactly as netavark is; rete's store in the lab (Podman
    /// passes its environment on, so this is how a user points it there).
    fn rete(lab: &Lab, rete: PathBuf, tag: &str) -> Res<Self> {
        let host = lab.netns(&format!("rb-rete-netavark-{tag}"))?;
        ip_batch(&host, "link set lo up")?;
        let dir = lab.subdir("rete-netavark")?;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
        let target =
            std::fs::canonicalize(&rete).map_err(|e| format!("{}: {e}", rete.display()))?;
        let link = bin.join("netavark");
        std::os::unix::fs::symlink(&target, &link)
            .map_err(|e| format!("symlink {}: {e}", link.display()))?;
        Ok(Netavark {
            name: "rete-netavark",
            bin: link,
            host,
            config: lab.subdir("rete-netavark/config")?,
            env: vec![
                ("RETE_STATE_DIR", dir.join("state")),
                ("RETE_RUN_DIR", dir.join("run")),
                ("RETE_NETNS_DIR", dir.join("netns")),
                ("RETE_NETNS_ETC_DIR", dir.join("etc")),
            ],
        })
    }

    /// Podman's input for container `i` on network "bench".
    fn json(i: usize) -> String {
        serde_json::json!({
            "container_id": format!("{i:064x}"),
            "container_name": format!("c{i}"),
            "networks": {"bench": {"interface_name": "eth0", "static_ips": [addr(i).to_string()]}},
            "network_info": {"bench": {
                "name": "bench",
                "id": "b".repeat(64),
                "driver": "bridge",
                "network_interface": "podman-bench",
                "subnets": [{"subnet": SUBNET, "gateway": GATEWAY}],
                "ipv6_enabled": false,
                "internal": false,
                "dns_enabled": false
            }},
            "port_mappings": [{"host_ip": "", "container_port": 80, "host_port": 10000 + i, "range": 1, "protocol": "tcp"}]
        })
        .to_string()
    }

    fn go(&self, verb: &str, i: usize, cns: &Ns) -> Res<Duration> {
        let json = Self::json(i);
        let h = self.host.open()?;
        let mut cmd = cmd_in(&h, self.bin.to_str().unwrap());
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(&self.config)
            .args(["--rootless", "false", verb])
            .arg(&cns.path);
        timed(&mut cmd, json.as_bytes()).map(|r| r.0)
    }
}

impl Peer for Netavark {
    fn name(&self) -> &'static str {
        self.name
    }
    fn host(&self) -> &Ns {
        &self.host
    }
    fn attach(&mut self, i: usize, cns: &Ns) -> Res<Duration> {
        self.go("setup", i, cns)
    }
    fn detach(&mut self, i: usize, cns: &Ns) -> Res<Duration> {
        self.go("teardown", i, cns)
    }
    fn version(&self) -> String {
        if self.name == "netavark" {
            return Command::new(&self.bin)
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
        }
        // rete's `netavark version` prints JSON, as netavark's does.
        let v = Command::new(&self.bin)
            .arg("version")
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| v["version"].as_str().map(str::to_string))
            .unwrap_or_default();
        format!(
            "rete {v} invoked as netavark (symlink {})",
            self.bin.display()
        )
    }
}

// ---- CNI reference plugins ----

struct Cni {
    path: PathBuf,
    host: Ns,
    bridge_conf: String,
    /// The portmap config of each attached container (with its prevResult),
    /// reused for DEL.
    portmap_conf: Vec<Option<String>>,
}

impl Cni {
    fn new(lab: &Lab, path: PathBuf, tag: &str) -> Res<Self> {
        let host = lab.netns(&format!("rb-cni-{tag}"))?;
        ip_batch(&host, "link set lo up")?;
        let ipam = lab.subdir("cni-ipam")?;
        let bridge_conf = cniconf::reference_bridge(&ipam);
        Ok(Cni {
            path,
            host,
            bridge_conf,
            portmap_conf: Vec::new(),
        })
    }

    fn plugin(&self, h: &File, plugin: &str, command: &str, i: usize, cns: &Ns) -> Command {
        let mut cmd = cmd_in(h, self.path.join(plugin).to_str().unwrap());
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("{i:064x}"))
            .env("CNI_NETNS", &cns.path)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.path);
        cmd
    }

    fn portmap(i: usize, prev: serde_json::Value) -> String {
        cniconf::reference_portmap(10000 + i as u16, prev)
    }
}

impl Peer for Cni {
    fn name(&self) -> &'static str {
        "cni"
    }
    fn host(&self) -> &Ns {
        &self.host
    }
    fn attach(&mut self, i: usize, cns: &Ns) -> Res<Duration> {
        let h = self.host.open()?;
        let mut bridge = self.plugin(&h, "bridge", "ADD", i, cns);
        let mut portmap = self.plugin(&h, "portmap", "ADD", i, cns);
        let t0 = Instant::now();
        let (_, result) = timed(&mut bridge, self.bridge_conf.as_bytes())?;
        let prev: serde_json::Value =
            serde_json::from_str(&result).map_err(|e| format!("bridge result: {e}: {result}"))?;
        let conf = Self::portmap(i, prev);
        timed(&mut portmap, conf.as_bytes())?;
        let dt = t0.elapsed();
        if self.portmap_conf.len() <= i {
            self.portmap_conf.resize(i + 1, None);
        }
        self.portmap_conf[i] = Some(conf);
        Ok(dt)
    }
    fn detach(&mut self, i: usize, cns: &Ns) -> Res<Duration> {
        let h = self.host.open()?;
        let conf = self.portmap_conf[i].take().ok_or("detach before attach")?;
        let mut portmap = self.plugin(&h, "portmap", "DEL", i, cns);
        let mut bridge = self.plugin(&h, "bridge", "DEL", i, cns);
        let t0 = Instant::now();
        timed(&mut portmap, conf.as_bytes())?;
        timed(&mut bridge, self.bridge_conf.as_bytes())?;
        Ok(t0.elapsed())
    }
    fn version(&self) -> String {
        let mut cmd = Command::new(self.path.join("bridge"));
        cmd.env("CNI_COMMAND", "VERSION");
        run(&mut cmd, b"")
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }
}

// ---- rete as a CNI plugin ----

struct ReteCni {
    bin: PathBuf,
    host: Ns,
    dir: PathBuf,
    /// Each attached container's ADD result, DEL's prevResult.
    results: Vec<Option<serde_json::Value>>,
}

impl ReteCni {
    fn new(lab: &Lab, bin: PathBuf, tag: &str) -> Res<Self> {
        let host = lab.netns(&format!("rb-rete-cni-{tag}"))?;
        ip_batch(&host, "link set lo up")?;
        Ok(ReteCni {
            bin,
            host,
            dir: lab.subdir("rete-cni")?,
            results: Vec::new(),
        })
    }

    /// The plugin process, with the environment a runtime gives it (the
    /// binary is a CNI plugin when CNI_COMMAND is set) and rete's store in
    /// the lab.
    fn plugin(&self, h: &File, command: &str, i: usize, cns: &Ns) -> Command {
        let mut cmd = cmd_in(h, self.bin.to_str().unwrap());
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("{i:064x}"))
            .env("CNI_NETNS", &cns.path)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.bin.parent().unwrap_or(&self.bin))
            .env("RETE_STATE_DIR", self.dir.join("state"))
            .env("RETE_RUN_DIR", self.dir.join("run"))
            .env("RETE_NETNS_DIR", self.dir.join("netns"))
            .env("RETE_NETNS_ETC_DIR", self.dir.join("etc"));
        cmd
    }
}

impl Peer for ReteCni {
    fn name(&self) -> &'static str {
        "rete-cni"
    }
    fn host(&self) -> &Ns {
        &self.host
    }
    fn attach(&mut self, i: usize, cns: &Ns) -> Res<Duration> {
        let h = self.host.open()?;
        let conf = cniconf::rete_plugin(10000 + i as u16, None);
        let mut cmd = self.plugin(&h, "ADD", i, cns);
        let (dt, out) = timed(&mut cmd, conf.as_bytes())?;
        let result: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("rete result: {e}: {out}"))?;
        if self.results.len() <= i {
            self.results.resize(i + 1, None);
        }
        self.results[i] = Some(result);
        Ok(dt)
    }
    fn detach(&mut self, i: usize, cns: &Ns) -> Res<Duration> {
        let h = self.host.open()?;
        let prev = self.results[i].take().ok_or("detach before attach")?;
        let conf = cniconf::rete_plugin(10000 + i as u16, Some(&prev));
        let mut cmd = self.plugin(&h, "DEL", i, cns);
        timed(&mut cmd, conf.as_bytes()).map(|r| r.0)
    }
    fn version(&self) -> String {
        let v = Command::new(&self.bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        format!(
            "{v} as a CNI plugin (type rete, cniVersion {}, disableDns)",
            cniconf::CNI_VERSION
        )
    }
}

// ---- the floor: bare `ip` ----

struct Floor {
    host: Ns,
}

impl Floor {
    fn new(lab: &Lab, tag: &str) -> Res<Self> {
        let host = lab.netns(&format!("rb-floor-{tag}"))?;
        ip_batch(
            &host,
            &format!(
                "link set lo up\nlink add rbbr0 up type bridge\naddr add {GATEWAY}/16 dev rbbr0\n"
            ),
        )?;
        Ok(Floor { host })
    }
}

impl Peer for Floor {
    fn name(&self) -> &'static str {
        "floor"
    }
    fn host(&self) -> &Ns {
        &self.host
    }
    fn attach(&mut self, i: usize, cns: &Ns) -> Res<Duration> {
        let h = self.host.open()?;
        let c = cns.open()?;
        let mut outer = cmd_in(&h, "ip");
        outer.args(["-batch", "-"]);
        let mut inner = cmd_in(&c, "ip");
        inner.args(["-batch", "-"]);
        let outer_script = format!(
            "link add rbf{i} master rbbr0 up type veth peer name eth0 netns {}\n",
            cns.path.display()
        );
        let inner_script = format!(
            "link set lo up\nlink set eth0 up\naddr add {}/16 dev eth0\nroute add default via {GATEWAY}\n",
            addr(i)
        );
        let t0 = Instant::now();
        timed(&mut outer, outer_script.as_bytes())?;
        timed(&mut inner, inner_script.as_bytes())?;
        Ok(t0.elapsed())
    }
    fn detach(&mut self, i: usize, _: &Ns) -> Res<Duration> {
        let h = self.host.open()?;
        let mut cmd = cmd_in(&h, "ip");
        cmd.args(["link", "del", &format!("rbf{i}")]);
        timed(&mut cmd, b"").map(|r| r.0)
    }
    fn version(&self) -> String {
        Command::new("ip")
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

// ---- the run ----

/// veth devices in a namespace (each attached container has one host end).
fn veths(ns: &Ns) -> Res<usize> {
    let f = ns.open()?;
    let mut cmd = cmd_in(&f, "ip");
    cmd.args(["-o", "link", "show", "type", "veth"]);
    Ok(run(&mut cmd, b"")?.lines().count())
}

/// The container's eth0 has its address and a default route.
fn plumbed(cns: &Ns, i: usize) -> Res<()> {
    let f = cns.open()?;
    let mut cmd = cmd_in(&f, "ip");
    cmd.args(["-4", "-o", "addr", "show", "dev", "eth0"]);
    let a = run(&mut cmd, b"")?;
    let mut cmd = cmd_in(&f, "ip");
    cmd.args(["-4", "route", "show", "default"]);
    let r = run(&mut cmd, b"")?;
    if !a.contains(&format!("{}/16", addr(i))) || !r.contains(GATEWAY) {
        return Err(format!("container {i} is not plumbed as expected: {a} {r}"));
    }
    Ok(())
}

struct Samples {
    attach: Vec<f64>,
    detach: Vec<f64>,
}

/// How long, untimed, the processes a peer's command left behind get to end
/// before the next peer's command (see `lab::settle`).
const SETTLE: Duration = Duration::from_secs(2);

fn main() {
    let args = Args::parse();
    if let Err(e) = bench(args) {
        eprintln!("bench_attach: {e}");
        std::process::exit(1);
    }
}

fn bench(args: Args) -> Res<()> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces)".into());
    }
    // A Linux bridge takes at most 1023 ports, and each peer's containers
    // share one bridge.
    if args.n == 0 || args.n > 1023 {
        return Err("--n must be between 1 and 1023 (a bridge holds at most 1023 ports)".into());
    }
    let started = Instant::now();
    lab::adopt_orphans()?;
    let lab = Lab::new(args.dir.clone(), "attach")?;
    let tag = std::process::id().to_string();
    let mut peers: Vec<Box<dyn Peer>> = Vec::new();
    for p in &args.peers {
        peers.push(match p.as_str() {
            "rete" | "rete-own" => Box::new(Rete::new(
                &lab,
                args.rete.clone().unwrap_or_else(lab::default_rete),
                &tag,
                args.rete_dns,
                p == "rete-own",
            )?),
            "rete-cni" => Box::new(ReteCni::new(
                &lab,
                args.rete.clone().unwrap_or_else(lab::default_rete),
                &tag,
            )?),
            "rete-netavark" => Box::new(Netavark::rete(
                &lab,
                args.rete.clone().unwrap_or_else(lab::default_rete),
                &tag,
            )?),
            "netavark" => Box::new(Netavark::new(&lab, args.netavark.clone(), &tag)?),
            "cni" => Box::new(Cni::new(&lab, args.cni_path.clone(), &tag)?),
            "floor" => Box::new(Floor::new(&lab, &tag)?),
            other => return Err(format!("unknown peer {other}")),
        });
    }
    let k = peers.len();
    let mut samples: Vec<Samples> = (0..k)
        .map(|_| Samples {
            attach: Vec::with_capacity(args.n),
            detach: Vec::with_capacity(args.n),
        })
        .collect();
    let mut containers: Vec<Vec<Ns>> = (0..k).map(|_| Vec::with_capacity(args.n)).collect();

    eprintln!("machine: {}", lab::machine());
    eprintln!(
        "attaching {} containers to each of: {}",
        args.n,
        args.peers.join(", ")
    );
    for i in 1..=args.n {
        for j in 0..k {
            let p = (i + j) % k;
            let cns = lab.netns(&format!("{}-c{i}", peers[p].name()))?;
            let dt = peers[p]
                .attach(i, &cns)
                .map_err(|e| format!("{} attach {i}: {e}", peers[p].name()))?;
            lab::settle(SETTLE);
            samples[p].attach.push(ms(dt));
            containers[p].push(cns);
        }
        if i % 100 == 0 || i == args.n {
            progress("attach", i, &peers, &samples, |s| &s.attach, started);
        }
    }
    // Untimed checks that every peer did its work.
    for p in 0..k {
        let n = veths(peers[p].host())?;
        if n != args.n {
            return Err(format!(
                "{}: {n} veths in its host namespace after {} attaches",
                peers[p].name(),
                args.n
            ));
        }
        for i in [1, args.n] {
            plumbed(&peers[p].container_ns(i, &containers[p][i - 1]), i)
                .map_err(|e| format!("{}: {e}", peers[p].name()))?;
        }
    }
    for i in 1..=args.n {
        for j in 0..k {
            let p = (i + j) % k;
            let dt = peers[p]
                .detach(i, &containers[p][i - 1])
                .map_err(|e| format!("{} detach {i}: {e}", peers[p].name()))?;
            lab::settle(SETTLE);
            samples[p].detach.push(ms(dt));
        }
        if i % 100 == 0 || i == args.n {
            progress("detach", i, &peers, &samples, |s| &s.detach, started);
        }
    }
    for peer in peers.iter_mut() {
        // `rete rm` leaves deleting the veth pair to the kernel's teardown of
        // the container's namespace, which may still be finishing.
        let mut n = veths(peer.host())?;
        for _ in 0..100 {
            if n == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            n = veths(peer.host())?;
        }
        if n != 0 {
            return Err(format!(
                "{}: {n} veths left after detaching all",
                peer.name()
            ));
        }
        peer.finish()?;
    }

    if let Some(path) = &args.csv {
        let mut f = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut out = String::from("peer,op,i,ms\n");
        for p in 0..k {
            for (op, v) in [
                ("attach", &samples[p].attach),
                ("detach", &samples[p].detach),
            ] {
                for (i, x) in v.iter().enumerate() {
                    out.push_str(&format!("{},{op},{},{x:.3}\n", peers[p].name(), i + 1));
                }
            }
        }
        f.write_all(out.as_bytes()).map_err(|e| e.to_string())?;
    }

    report(&args, &peers, &samples, started.elapsed());
    Ok(())
}

fn progress(
    what: &str,
    i: usize,
    peers: &[Box<dyn Peer>],
    samples: &[Samples],
    f: impl Fn(&Samples) -> &Vec<f64>,
    started: Instant,
) {
    let line: Vec<String> = peers
        .iter()
        .zip(samples)
        .map(|(p, s)| {
            let v = f(s);
            let last = &v[v.len().saturating_sub(100)..];
            format!("{} {:.2}", p.name(), median(last))
        })
        .collect();
    eprintln!(
        "[{:>6.1} s] {what} {i}: median ms of the last 100: {}",
        started.elapsed().as_secs_f64(),
        line.join(", ")
    );
}

struct Row {
    all: f64,
    first: f64,
    last: f64,
}

fn row(v: &[f64], w: usize) -> Row {
    let w = w.min(v.len());
    Row {
        all: median(v),
        first: median(&v[..w]),
        last: median(&v[v.len() - w..]),
    }
}

fn report(args: &Args, peers: &[Box<dyn Peer>], samples: &[Samples], took: Duration) {
    let w = args.window.min(args.n);
    println!("## Attach/detach latency, N = {}", args.n);
    println!();
    println!("- machine: {}", lab::machine());
    for p in peers {
        println!("- {}: {}", p.name(), p.version());
    }
    println!("- run took {:.0} s", took.as_secs_f64());
    println!();
    println!("Medians in ms. Attach: all N, containers 1..{w}, containers {}..{}. Detach: all N, the first {w} detached (with {}..{} attached), the last {w} (with {w}..1 attached).", args.n - w + 1, args.n, args.n, args.n - w + 1);
    println!();
    println!("| peer | attach (all) | attach (first {w}) | attach (last {w}) | detach (all) | detach (first {w}) | detach (last {w}) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let rows: Vec<(Row, Row)> = samples
        .iter()
        .map(|s| (row(&s.attach, w), row(&s.detach, w)))
        .collect();
    for (p, (a, d)) in peers.iter().zip(&rows) {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            p.name(),
            a.all,
            a.first,
            a.last,
            d.all,
            d.first,
            d.last
        );
    }
    let find = |n: &str| peers.iter().position(|p| p.name() == n);
    // (rete in one of its roles, the peer it stands in for or the floor)
    let pairs: Vec<(usize, usize)> = [
        ("rete", "floor"),
        ("rete-own", "floor"),
        ("rete", "netavark"),
        ("rete", "cni"),
        ("rete-cni", "cni"),
        ("rete-cni", "floor"),
        ("rete-netavark", "netavark"),
        ("rete-netavark", "floor"),
    ]
    .iter()
    .filter_map(|(a, b)| Some((find(a)?, find(b)?)))
    .collect();
    if !pairs.is_empty() {
        println!();
        println!("Ratios of medians (a / b; < 1 means a is faster):");
        println!();
        println!("| a / b | attach (all) | attach (first {w}) | attach (last {w}) | detach (all) | detach (first {w}) | detach (last {w}) |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for &(a, b) in &pairs {
            let (aa, ad) = &rows[a];
            let (ba, bd) = &rows[b];
            println!(
                "| {} / {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                peers[a].name(),
                peers[b].name(),
                aa.all / ba.all,
                aa.first / ba.first,
                aa.last / ba.last,
                ad.all / bd.all,
                ad.first / bd.first,
                ad.last / bd.last
            );
        }
    }
    println!();
    let retes: Vec<usize> = ["rete", "rete-cni", "rete-netavark"]
        .iter()
        .filter_map(|n| find(n))
        .collect();
    let block = if args.n <= 500 { 50 } else { 100 };
    if let Some(f) = find("floor") {
        // Paired: container i of a rete peer against container i of the
        // floor, attached moments apart, so machine noise mostly cancels.
        println!("Paired with the floor (container i against container i): median of peer - floor, and how often the peer was faster:");
        println!();
        let w = w.max(args.n.min(100));
        for &r in &retes {
            for (op, rv, fv) in [
                ("attach", &samples[r].attach, &samples[f].attach),
                ("detach", &samples[r].detach, &samples[f].detach),
            ] {
                let d: Vec<f64> = rv.iter().zip(fv).map(|(a, b)| a - b).collect();
                let part = |lo: usize, hi: usize| {
                    let x = &d[lo..hi];
                    format!(
                        "{:+.2} ms, faster in {}/{}",
                        median(x),
                        x.iter().filter(|v| **v < 0.0).count(),
                        x.len()
                    )
                };
                println!(
                    "- {} {op}: all {}; first {w}: {}; last {w}: {}",
                    peers[r].name(),
                    part(0, d.len()),
                    part(0, w),
                    part(d.len() - w, d.len())
                );
            }
        }
        println!();
    }
    // Blocks of containers, in the order attached (and detached).
    let blocks: Vec<(usize, usize)> = (0..args.n)
        .step_by(block)
        .map(|lo| (lo, (lo + block).min(args.n)))
        .collect();
    // Detach relative to the floor as the bridge empties, container by
    // container: the floor's detach has steps of its own (grace periods),
    // which the ratio of container i to the floor's container i, timed
    // moments apart, follows more closely than a ratio of medians.
    let detach_paired: Vec<(usize, Vec<f64>)> = match find("floor") {
        Some(f) => retes
            .iter()
            .map(|&r| {
                let q = samples[r]
                    .detach
                    .iter()
                    .zip(&samples[f].detach)
                    .map(|(a, b)| a / b)
                    .collect();
                (r, q)
            })
            .collect(),
        None => Vec::new(),
    };
    if !detach_paired.is_empty() {
        println!("Detach relative to the floor, paired (median of peer / floor over the containers), by blocks of {block} detached (the first with {}..{} attached):", args.n, args.n + 1 - block.min(args.n));
        println!();
        let mut head = String::from("| detached |");
        let mut rule = String::from("|---|");
        for (r, _) in &detach_paired {
            head.push_str(&format!(" {} |", peers[*r].name()));
            rule.push_str("---:|");
        }
        println!("{head}");
        println!("{rule}");
        let spans = blocks
            .iter()
            .map(|&(lo, hi)| (format!("{}-{hi}", lo + 1), lo, hi))
            .chain([
                (format!("first {w}"), 0, w),
                (format!("last {w}"), args.n - w, args.n),
            ]);
        for (label, lo, hi) in spans {
            let mut line = format!("| {label} |");
            for (_, q) in &detach_paired {
                line.push_str(&format!(" {:.3} |", median(&q[lo..hi])));
            }
            println!("{line}");
        }
        println!();
    }
    // Attach medians by blocks of containers: how each peer grows.
    println!("Attach medians (ms) by blocks of {block} containers:");
    println!();
    let mut head = String::from("| containers |");
    let mut rule = String::from("|---|");
    for p in peers {
        head.push_str(&format!(" {} |", p.name()));
        rule.push_str("---:|");
    }
    if let Some(f) = find("floor") {
        for &r in &retes {
            head.push_str(&format!(" {} / {} |", peers[r].name(), peers[f].name()));
            rule.push_str("---:|");
        }
    }
    println!("{head}");
    println!("{rule}");
    let mut over_floor: Vec<Vec<String>> = vec![Vec::new(); peers.len()];
    for &(lo, hi) in &blocks {
        let mut line = format!("| {}-{} |", lo + 1, hi);
        let m: Vec<f64> = samples.iter().map(|s| median(&s.attach[lo..hi])).collect();
        for x in &m {
            line.push_str(&format!(" {x:.2} |"));
        }
        if let Some(f) = find("floor") {
            for &r in &retes {
                let q = m[r] / m[f];
                if q > 1.0 {
                    over_floor[r].push(format!("{}-{} ({q:.2})", lo + 1, hi));
                }
                line.push_str(&format!(" {q:.2} |"));
            }
        }
        println!("{line}");
    }
    println!();

    let factor = |a: usize, b: usize| rows[b].0.all / rows[a].0.all;
    if let (Some(r), Some(f)) = (find("rete"), find("floor")) {
        let (ra, fa) = (&rows[r].0, &rows[f].0);
        let met = ra.all <= fa.all;
        println!(
            "- target rete median attach <= floor's: {} ({:.2} ms vs {:.2} ms)",
            if met { "met" } else { "NOT met" },
            ra.all,
            fa.all
        );
        let (r1, rn) = (ra.first / fa.first, ra.last / fa.last);
        println!(
            "- target rete/floor at the last {w} no worse than at the first {w}: {} ({rn:.2} vs {r1:.2})",
            verdict(rn, r1)
        );
    }
    if let Some((_, q)) = detach_paired.iter().find(|(r, _)| Some(*r) == find("rete")) {
        let (q1, qn) = (median(&q[..w]), median(&q[args.n - w..]));
        println!(
            "- target rete detach/floor with {} attached no worse than with {w}..1 (paired, first vs last {w} detached): {} ({q1:.3} vs {qn:.3})",
            args.n,
            verdict(q1, qn)
        );
    }
    if let (Some(r), Some(n)) = (find("rete"), find("netavark")) {
        let x = factor(r, n);
        println!(
            "- target rete >= 15x faster than netavark (attach, all): {} ({x:.1}x)",
            if x >= 15.0 { "met" } else { "NOT met" }
        );
    }
    if let (Some(r), Some(c)) = (find("rete-cni"), find("cni")) {
        let x = factor(r, c);
        println!(
            "- target rete-cni median ADD >= 20x faster than the reference chain: {} ({x:.1}x; {:.2} ms vs {:.2} ms)",
            if x >= 20.0 { "met" } else { "NOT met" },
            rows[r].0.all,
            rows[c].0.all
        );
    }
    if let (Some(r), Some(f)) = (find("rete-cni"), find("floor")) {
        let (ra, fa) = (&rows[r].0, &rows[f].0);
        let over = &over_floor[r];
        println!(
            "- target rete-cni median ADD within the floor at every N: {} (all {:.2} vs {:.2} ms, first {w} {:.2} vs {:.2}, last {w} {:.2} vs {:.2}; blocks of {block} over the floor: {})",
            if ra.all <= fa.all && ra.first <= fa.first && ra.last <= fa.last && over.is_empty() {
                "met"
            } else {
                "NOT met"
            },
            ra.all,
            fa.all,
            ra.first,
            fa.first,
            ra.last,
            fa.last,
            if over.is_empty() {
                "none".to_string()
            } else {
                over.join(", ")
            }
        );
    }
    if let (Some(r), Some(n)) = (find("rete-netavark"), find("netavark")) {
        let x = factor(r, n);
        println!(
            "- target rete-netavark setup >= 15x faster than netavark: {} ({x:.1}x; {:.2} ms vs {:.2} ms; teardown {:.1}x)",
            if x >= 15.0 { "met" } else { "NOT met" },
            rows[r].0.all,
            rows[n].0.all,
            rows[n].1.all / rows[r].1.all
        );
    }
}

/// Whether `x` is no worse (no greater) than `limit`, as a target line says it.
fn verdict(x: f64, limit: f64) -> &'static str {
    if x <= limit {
        "met"
    } else if x <= limit * 1.05 {
        "NOT met, within 5%"
    } else {
        "NOT met"
    }
}
