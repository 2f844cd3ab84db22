//! Many hosts, one container network: `rete agent` on each host, joined
//! through a real etcd server (Debian's etcd-server).
//!
//! The lab: an underlay namespace holding a bridge; an etcd namespace, an
//! "outside" namespace and N host namespaces plugged into it by veth pairs
//! (10.77.0.0/24). Each host runs its own agent with its own state, run and
//! netns dirs; containers are made by `rete create --network cluster` in the
//! hosts. Everything lives under one temporary directory; every process the
//! lab started is killed and every namespace unpinned on drop.

mod common;

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{
    enter_on_exec, ping, ping_once, rx_bytes, sh_in, sh_in_allow_fail, tcp_get, transfer, tx_bytes,
    Server, BULK,
};
use serde_json::Value;

const ETCD_IP: &str = "10.77.0.2";
const OUTSIDE_IP: &str = "10.77.0.200";
const CIDR: &str = "10.244.0.0/16";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn etcd_binary() -> Option<&'static str> {
    ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// Skips the test (returning early) unless root and etcd are there.
macro_rules! require_cluster_lab {
    () => {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to create network namespaces");
            return;
        }
        if etcd_binary().is_none() {
            eprintln!("skipped: needs etcd (apt-get install etcd-server)");
            return;
        }
    };
}

struct Host {
    name: String,
    ns: PathBuf,
    dir: PathBuf,
    underlay: String,
    agent: Option<Child>,
}

struct ClusterLab {
    dir: PathBuf,
    underlay: PathBuf,
    etcd_ns: PathBuf,
    outside: PathBuf,
    etcd: Option<Child>,
    hosts: Vec<Host>,
    backend: &'static str,
    lease_ttl: u32,
    /// etcd over https with client certificates.
    tls: bool,
    /// More arguments for each host's agent, by host.
    agent_args: Vec<Vec<&'static str>>,
}

impl ClusterLab {
    /// The underlay, etcd (started, cluster initialised) and `n` hosts whose
    /// agents are started all at once.
    fn new(name: &str, n: usize, backend: &'static str, lease_ttl: u32) -> ClusterLab {
        ClusterLab::with_tls(name, n, backend, lease_ttl, false)
    }

    fn with_tls(
        name: &str,
        n: usize,
        backend: &'static str,
        lease_ttl: u32,
        tls: bool,
    ) -> ClusterLab {
        ClusterLab::with_agent_args(name, n, backend, lease_ttl, tls, Vec::new())
    }

    fn with_agent_args(
        name: &str,
        n: usize,
        backend: &'static str,
        lease_ttl: u32,
        tls: bool,
        agent_args: Vec<Vec<&'static str>>,
    ) -> ClusterLab {
        let k = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!(
            "rete-test-cluster-{name}-{}-{k}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut lab = ClusterLab {
            underlay: dir.join("underlay.ns"),
            etcd_ns: dir.join("etcd.ns"),
            outside: dir.join("outside.ns"),
            dir,
            etcd: None,
            hosts: Vec::new(),
            backend,
            lease_ttl,
            tls,
            agent_args,
        };
        if tls {
            lab.make_certificates();
        }
        rete::netns::create(&lab.underlay).expect("create underlay namespace");
        sh_in(
            &lab.underlay,
            "ip link set lo up && ip link add ul0 type bridge && ip link set ul0 up",
        );
        for (ns, ip) in [
            (lab.etcd_ns.clone(), ETCD_IP),
            (lab.outside.clone(), OUTSIDE_IP),
        ] {
            lab.plug(&ns, ip);
        }
        lab.start_etcd();
        lab.wait_for("etcd to answer", Duration::from_secs(20), |l| {
            l.rete_anywhere(&["node", "ls"]).status.success()
        });
        let out = lab.rete_anywhere(&["cluster", "init", "--cidr", CIDR, "--subnet-len", "24"]);
        assert!(out.status.success(), "cluster init: {}", stderr(&out));
        for i in 1..=n {
            lab.add_host(i);
        }
        for i in 0..n {
            lab.start_agent(i);
        }
        lab.wait_for("every host in node ls", Duration::from_secs(30), |l| {
            l.nodes().len() == n
        });
        for i in 0..n {
            lab.wait_for_cluster_network(i);
        }
        lab
    }

    /// Waits until host i's agent has made its `cluster` network.
    fn wait_for_cluster_network(&self, i: usize) {
        let what = format!("{}'s cluster network", self.hosts[i].name);
        self.wait_for(&what, Duration::from_secs(15), |l| {
            l.rete(i, &["network", "inspect", "cluster"])
                .status
                .success()
        });
    }

    /// A namespace on the underlay with address `ip`.
    fn plug(&self, ns: &Path, ip: &str) -> String {
        rete::netns::create(ns).expect("create namespace");
        let port = format!("p{}", ip.rsplit('.').next().unwrap());
        sh_in(
            &self.underlay,
            &format!(
                "ip link add {port} type veth peer name eth0 netns {ns} && \
                 ip link set {port} master ul0 up",
                ns = ns.display()
            ),
        );
        sh_in(
            ns,
            &format!("ip link set lo up && ip link set eth0 up && ip addr add {ip}/24 dev eth0"),
        );
        port
    }

    /// A CA, etcd's server certificate for its address, and a client
    /// certificate, all signed by the CA (openssl, P-256 keys).
    fn make_certificates(&self) {
        let d = self.dir.display();
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "set -e; cd {d}; \
                 openssl req -x509 {key} -keyout ca.key -out ca.pem -days 1 -subj /CN=lab-ca; \
                 openssl req {key} -keyout server.key -out server.csr -subj /CN=etcd; \
                 echo subjectAltName=IP:{ETCD_IP} > san.ext; \
                 openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                   -out server.pem -days 1 -extfile san.ext; \
                 openssl req {key} -keyout client.key -out client.csr -subj /CN=rete; \
                 echo extendedKeyUsage=clientAuth > client.ext; \
                 openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                   -out client.pem -days 1 -extfile client.ext"
            ))
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl: {}", stderr(&out));
    }

    fn etcd_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{ETCD_IP}:2379")
    }

    fn start_etcd(&mut self) {
        let data = self.dir.join("etcd-data");
        let client = self.etcd_url();
        let mut cmd = Command::new(etcd_binary().unwrap());
        if self.tls {
            cmd.arg("--cert-file")
                .arg(self.dir.join("server.pem"))
                .arg("--key-file")
                .arg(self.dir.join("server.key"))
                .arg("--trusted-ca-file")
                .arg(self.dir.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        cmd.args(["--name", "lab", "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "lab=http://127.0.0.1:2380"])
            .stdout(Stdio::null())
            .stderr(File::create(self.dir.join("etcd.log")).unwrap());
        enter_on_exec(&mut cmd, &self.etcd_ns);
        self.etcd = Some(cmd.spawn().expect("start etcd"));
    }

    fn stop_etcd(&mut self) {
        if let Some(mut c) = self.etcd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn add_host(&mut self, i: usize) {
        let name = format!("h{i}");
        let ns = self.dir.join(format!("{name}.ns"));
        let underlay = format!("10.77.0.{}", 10 + i);
        self.plug(&ns, &underlay);
        sh_in(&ns, &format!("ip route add default via {OUTSIDE_IP}"));
        let dir = self.dir.join(&name);
        std::fs::create_dir_all(dir.join("ns")).unwrap();
        self.hosts.push(Host {
            name,
            ns,
            dir,
            underlay,
            agent: None,
        });
    }

    fn env(&self, cmd: &mut Command, dir: &Path) {
        cmd.env("RETE_STATE_DIR", dir.join("state"))
            .env("RETE_RUN_DIR", dir.join("run"))
            .env("RETE_NETNS_DIR", dir.join("ns"))
            .env("RETE_NETNS_ETC_DIR", dir.join("etc"))
            .env("RETE_RESOLV_CONF", dir.join("upstream-resolv.conf"))
            .env("RETE_ETCD", self.etcd_url());
        if self.tls {
            cmd.env("RETE_ETCD_CA", self.dir.join("ca.pem"))
                .env("RETE_ETCD_CERT", self.dir.join("client.pem"))
                .env("RETE_ETCD_KEY", self.dir.join("client.key"));
        }
    }

    fn start_agent(&mut self, i: usize) {
        let h = &self.hosts[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(h.dir.join("agent.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rete"));
        cmd.args(["agent", "--backend", self.backend, "--node-name", &h.name])
            .args(["--lease-ttl", &self.lease_ttl.to_string()])
            .args(self.agent_args.get(i).into_iter().flatten())
            .stdout(Stdio::null())
            .stderr(log);
        self.env(&mut cmd, &h.dir);
        enter_on_exec(&mut cmd, &h.ns);
        let child = cmd.spawn().expect("start agent");
        self.hosts[i].agent = Some(child);
    }

    /// Stops host i's agent: SIGTERM (a restart) or SIGKILL (a crash).
    fn stop_agent(&mut self, i: usize, signal: i32) {
        if let Some(mut c) = self.hosts[i].agent.take() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, signal) };
            let _ = c.wait();
        }
    }

    fn agent_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.hosts[i].dir.join("agent.log")).unwrap_or_default()
    }

    /// rete in host i's namespace with its dirs.
    fn rete(&self, i: usize, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rete"));
        cmd.args(args);
        self.env(&mut cmd, &self.hosts[i].dir);
        enter_on_exec(&mut cmd, &self.hosts[i].ns);
        cmd.output().expect("run rete")
    }

    fn rete_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.rete(i, args);
        assert!(
            out.status.success(),
            "rete {args:?} on {} failed: {}{}",
            self.hosts[i].name,
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// rete from the outside namespace (a host that runs no agent), with
    /// dirs of its own: cluster-wide commands.
    fn rete_anywhere(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rete"));
        cmd.args(args);
        self.env(&mut cmd, &self.dir.join("admin"));
        enter_on_exec(&mut cmd, &self.outside);
        cmd.output().expect("run rete")
    }

    /// `rete node ls --format json`.
    fn nodes(&self) -> Vec<Value> {
        let out = self.rete_anywhere(&["node", "ls", "--format", "json"]);
        if !out.status.success() {
            return Vec::new();
        }
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap_or_default()
    }

    fn subnet_of(&self, node: &str) -> Option<String> {
        self.nodes()
            .into_iter()
            .find(|n| n["name"] == node)
            .and_then(|n| n["subnet"].as_str().map(str::to_string))
    }

    /// A container on host i's cluster network; returns its address.
    fn container(&self, i: usize, name: &str) -> IpAddr {
        self.rete_ok(i, &["create", name, "--network", "cluster"]);
        let v: Value = serde_json::from_str(&self.rete_ok(i, &["inspect", name])).unwrap();
        let a = v[0]["endpoints"][0]["addresses"][0].as_str().unwrap();
        a.split('/').next().unwrap().parse().unwrap()
    }

    fn container_ns(&self, i: usize, name: &str) -> PathBuf {
        self.hosts[i].dir.join("ns").join(name)
    }

    /// The routes of host i, as `ip route` prints them.
    fn routes(&self, i: usize) -> String {
        sh_in_allow_fail(&self.hosts[i].ns, "ip route")
    }

    /// Polls `cond` every 100 ms until it holds; panics after `limit`.
    fn wait_for(&self, what: &str, limit: Duration, cond: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if cond(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs: Vec<String> = (0..self.hosts.len())
            .map(|i| format!("--- {}:\n{}", self.hosts[i].name, self.agent_log(i)))
            .collect();
        panic!("timed out waiting for {what}\n{}", logs.join("\n"));
    }
}

impl Drop for ClusterLab {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.stop_agent(i, libc::SIGKILL);
        }
        self.stop_etcd();
        for h in &self.hosts {
            if let Some(pid) = std::fs::read_to_string(h.dir.join("run/dns.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if let Ok(dir) = std::fs::read_dir(h.dir.join("ns")) {
                for e in dir.flatten() {
                    let _ = rete::netns::remove(&e.path());
                }
            }
            let _ = rete::netns::remove(&h.ns);
        }
        for ns in [&self.etcd_ns, &self.outside, &self.underlay] {
            let _ = rete::netns::remove(ns);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Containers on every host reach each other by their own addresses, with
/// no NAT between them; egress to the outside is masqueraded; every host
/// got its own subnet although the agents raced.
fn full_mesh(backend: &'static str) {
    let lab = ClusterLab::new(backend, 3, backend, 10);
    let nodes = lab.nodes();
    let mut subnets: Vec<&str> = nodes
        .iter()
        .map(|n| n["subnet"].as_str().unwrap())
        .collect();
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), 3, "distinct subnets: {nodes:?}");
    for n in &nodes {
        assert_eq!(n["backend"], backend, "{n}");
        assert_eq!(n["health"], "alive", "{n}");
    }

    let addrs: Vec<IpAddr> = (0..3).map(|i| lab.container(i, &format!("c{i}"))).collect();
    for (i, addr) in addrs.iter().enumerate() {
        let subnet: ipnet::IpNet = lab.subnet_of(&lab.hosts[i].name).unwrap().parse().unwrap();
        assert!(subnet.contains(addr), "c{i} {addr} in {subnet}");
    }
    for i in 0..3 {
        let from = lab.container_ns(i, &format!("c{i}"));
        for (j, to) in addrs.iter().enumerate().filter(|&(j, _)| j != i) {
            assert!(
                ping(&from, *to),
                "c{i} on h{} cannot ping c{j} {to} on h{}\n{}",
                i + 1,
                j + 1,
                lab.routes(i)
            );
        }
    }
    // TCP across hosts keeps the sender's address: no NAT between subnets.
    let c1 = lab.container_ns(1, "c1");
    let _srv = Server::tcp(&c1, addrs[1], 8080, "hello", 1);
    let got = tcp_get(&lab.container_ns(0, "c0"), addrs[1], 8080);
    assert_eq!(got, Some(format!("hello {}", addrs[0])));
    // Egress past the cluster is masqueraded behind the host's address.
    let _out = Server::tcp(&lab.outside, OUTSIDE_IP.parse().unwrap(), 8081, "out", 1);
    let got = tcp_get(
        &lab.container_ns(2, "c2"),
        OUTSIDE_IP.parse().unwrap(),
        8081,
    );
    assert_eq!(got, Some(format!("out {}", lab.hosts[2].underlay)));

    if backend == "vxlan" {
        let ns = &lab.hosts[0].ns;
        let neigh = sh_in(ns, "ip neigh show dev retevxlan0");
        assert_eq!(neigh.matches("PERMANENT").count(), 2, "{neigh}");
        let fdb = sh_in(ns, "bridge fdb show dev retevxlan0");
        for h in &lab.hosts[1..] {
            assert!(fdb.contains(&format!("dst {}", h.underlay)), "{fdb}");
        }
        let link = sh_in(ns, "ip -d link show retevxlan0");
        assert!(link.contains("nolearning"), "{link}");
    } else {
        let routes = lab.routes(0);
        for h in &lab.hosts[1..] {
            assert!(routes.contains(&format!("via {}", h.underlay)), "{routes}");
        }
    }
}

/// Traffic between containers on two hosts skips both bridges: the
/// sender's host end hands it to the underlay interface (for vxlan
/// encapsulated, past the VXLAN device), never up through its bridge;
/// where it arrives it goes straight into the container it is for, never
/// out of that container's host end. With `--fastpath false` it is routed
/// through the bridges (and the VXLAN devices); with one host on the fast
/// path and one off, each side's packets are what the other's kernel
/// expects. Either way each router hop decrements the TTL once (a reply
/// from another host's container arrives with 64 - 2), and every byte
/// arrives in order.
fn cross_host_traffic_skips_the_bridges(backend: &'static str) {
    for (h0_fast, h1_fast) in [(true, true), (false, false), (true, false)] {
        let flag = |on: bool| if on { "true" } else { "false" };
        let name = format!("arrive-{backend}-{h0_fast}-{h1_fast}");
        let args = vec![
            vec!["--fastpath", flag(h0_fast)],
            vec!["--fastpath", flag(h1_fast)],
        ];
        let lab = ClusterLab::with_agent_args(&name, 2, backend, 10, false, args);
        let a0 = lab.container(0, "c0");
        let a1 = lab.container(1, "c1");
        let (ns0, ns1) = (lab.container_ns(0, "c0"), lab.container_ns(1, "c1"));
        let v: Value = serde_json::from_str(&lab.rete_ok(1, &["inspect", "c1"])).unwrap();
        let veth = v[0]["endpoints"][0]["host_ifname"].as_str().unwrap();
        let v: Value =
            serde_json::from_str(&lab.rete_ok(0, &["network", "inspect", "cluster"])).unwrap();
        let bridge = v[0]["bridge"].as_str().unwrap().to_string();
        let h0 = &lab.hosts[0].ns;
        let h1 = &lab.hosts[1].ns;
        // What went up through h1's bridge, out of c1's host end, and, for
        // vxlan, out of h1's VXLAN device and into h2's.
        let counters = || {
            let vxlan = |ns: &Path, rx: bool| match backend {
                "vxlan" if rx => rx_bytes(ns, "retevxlan0"),
                "vxlan" => tx_bytes(ns, "retevxlan0"),
                _ => 0,
            };
            [
                rx_bytes(h0, &bridge),
                tx_bytes(h1, veth),
                vxlan(h0, false),
                vxlan(h1, true),
            ]
        };
        let before = counters();
        assert_eq!(transfer(&ns0, &ns1, a1), BULK, "{backend} c0 -> c1");
        let after = counters();
        let crossed: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        let what = [
            "up through h1's bridge",
            "out of c1's host end",
            "out of h1's VXLAN device",
            "into h2's VXLAN device",
        ];
        let fast = [h0_fast, h1_fast, h0_fast, h1_fast];
        for i in 0..4 {
            if backend != "vxlan" && i >= 2 {
                continue;
            }
            let logs = format!("{}\n{}", lab.agent_log(0), lab.agent_log(1));
            if fast[i] {
                assert!(
                    crossed[i] < (BULK / 10) as u64,
                    "{backend} {h0_fast}/{h1_fast}: {} of {BULK} bytes went {}: not on the fast path\n{logs}",
                    crossed[i],
                    what[i]
                );
            } else {
                assert!(
                    crossed[i] >= BULK as u64,
                    "{backend} {h0_fast}/{h1_fast}: only {} bytes went {}",
                    crossed[i],
                    what[i]
                );
            }
        }
        assert_eq!(transfer(&ns1, &ns0, a0), BULK, "{backend} c1 -> c0");

        let mut cmd = Command::new("busybox");
        cmd.args(["ping", "-c", "1", "-W", "2", &a1.to_string()]);
        enter_on_exec(&mut cmd, &ns0);
        let out = String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned();
        assert!(
            out.contains("ttl=62"),
            "{backend} {h0_fast}/{h1_fast}: {out}"
        );
        // A host's own traffic on the same device is not the shortcut's.
        let _srv = Server::tcp(
            &lab.hosts[1].ns,
            lab.hosts[1].underlay.parse().unwrap(),
            8082,
            "h2",
            1,
        );
        let got = tcp_get(
            &lab.hosts[0].ns,
            lab.hosts[1].underlay.parse().unwrap(),
            8082,
        );
        assert_eq!(got, Some(format!("h2 {}", lab.hosts[0].underlay)));

        if (h0_fast, h1_fast) == (true, true) {
            // h1's agent restarted with the fast path off takes it off: its
            // program leaves the underlay interface and its routes map is
            // emptied, so c0's traffic goes up through h1's bridge again.
            let mut lab = lab;
            lab.agent_args[0] = vec!["--fastpath", "false"];
            lab.stop_agent(0, libc::SIGTERM);
            lab.start_agent(0);
            lab.wait_for(
                "h1's arrivals program to go",
                Duration::from_secs(15),
                |l| {
                    !sh_in(&l.hosts[0].ns, "tc filter show dev eth0 ingress")
                        .contains("rete_routed")
                },
            );
            let before = rx_bytes(&lab.hosts[0].ns, &bridge);
            assert_eq!(
                transfer(&ns0, &ns1, a1),
                BULK,
                "{backend} c0 -> c1, h1 slow"
            );
            let up = rx_bytes(&lab.hosts[0].ns, &bridge) - before;
            assert!(
                up >= BULK as u64,
                "{backend}: only {up} bytes went up through h1's bridge"
            );
        }
    }
}

#[test]
fn vxlan_cross_host_traffic_skips_the_bridges() {
    require_cluster_lab!();
    cross_host_traffic_skips_the_bridges("vxlan");
}

#[test]
fn host_gw_cross_host_traffic_skips_the_bridges() {
    require_cluster_lab!();
    cross_host_traffic_skips_the_bridges("host-gw");
}

#[test]
fn vxlan_full_mesh() {
    require_cluster_lab!();
    full_mesh("vxlan");
}

#[test]
fn host_gw_full_mesh() {
    require_cluster_lab!();
    full_mesh("host-gw");
}

/// An agent restart keeps the host's subnet and does not interrupt
/// traffic; a crashed agent's host vanishes from its peers when its lease
/// expires; `rete node rm` removes a host at once and stops its agent.
#[test]
fn restart_expiry_and_removal() {
    require_cluster_lab!();
    let mut lab = ClusterLab::new("life", 3, "vxlan", 3);
    let a = lab.container(0, "a");
    let b = lab.container(1, "b");
    let from_a = lab.container_ns(0, "a");
    assert!(ping(&from_a, b));

    // Restart: traffic flows while the agent is down and after.
    let before = lab.subnet_of("h1").unwrap();
    lab.stop_agent(0, libc::SIGTERM);
    assert!(ping(&from_a, b), "traffic stops with the agent");
    assert!(ping(&lab.container_ns(1, "b"), a));
    lab.start_agent(0);
    lab.wait_for("h1 to log its subnet again", Duration::from_secs(15), |l| {
        l.agent_log(0).matches("holds").count() >= 2
    });
    assert_eq!(lab.subnet_of("h1").as_deref(), Some(before.as_str()));
    assert!(ping(&from_a, b), "traffic after the restart");

    // Crash: h2's record expires with its lease, and peers drop its route.
    let h2 = lab.subnet_of("h2").unwrap();
    assert!(lab.routes(0).contains(&h2));
    lab.stop_agent(1, libc::SIGKILL);
    lab.wait_for("h2 to vanish from h1", Duration::from_secs(20), |l| {
        !l.routes(0).contains(&h2)
    });
    assert!(lab.subnet_of("h2").is_none(), "{:?}", lab.nodes());
    assert!(!ping_once(&from_a, b));

    // Removal: h3 goes from every peer at once, and its agent stops, even
    // when it sees the removal late (paused here, as a loaded host would
    // be): by then `node rm` has revoked its lease too, which must not
    // read as an expiry.
    let h3 = lab.subnet_of("h3").unwrap();
    assert!(lab.routes(0).contains(&h3));
    let pid = lab.hosts[2].agent.as_ref().unwrap().id() as i32;
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let out = lab.rete_anywhere(&["node", "rm", "h3"]);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(out.status.success(), "{}", stderr(&out));
    lab.wait_for("h3 to vanish from h1", Duration::from_secs(10), |l| {
        !l.routes(0).contains(&h3)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = lab.hosts[2].agent.as_mut().unwrap().try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "h3's agent still runs:\n{}",
            lab.agent_log(2)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{}", lab.agent_log(2));
    assert!(lab.agent_log(2).contains("removed from the cluster"));
    let out = lab.rete_anywhere(&["node", "rm", "h3"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no host \"h3\""), "{}", stderr(&out));
}

/// With etcd down, traffic goes on and agents keep running; when it
/// returns, they catch up with a host that joined afterwards.
#[test]
fn etcd_outage() {
    require_cluster_lab!();
    let mut lab = ClusterLab::new("outage", 2, "vxlan", 10);
    let b = lab.container(1, "b");
    let from_a = {
        lab.container(0, "a");
        lab.container_ns(0, "a")
    };
    assert!(ping(&from_a, b));
    lab.stop_etcd();
    std::thread::sleep(Duration::from_secs(2));
    assert!(ping(&from_a, b), "traffic stops with etcd");
    for i in 0..2 {
        let agent = lab.hosts[i].agent.as_mut().unwrap();
        assert!(agent.try_wait().unwrap().is_none(), "agent {i} exited");
    }
    lab.start_etcd();
    lab.add_host(3);
    lab.start_agent(2);
    lab.wait_for("h3 in node ls", Duration::from_secs(30), |l| {
        l.nodes().len() == 3
    });
    let h3 = lab.subnet_of("h3").unwrap();
    lab.wait_for("h1 to learn h3", Duration::from_secs(30), |l| {
        l.routes(0).contains(&h3)
    });
    lab.wait_for_cluster_network(2);
    let c = lab.container(2, "c");
    assert!(ping(&from_a, c));
    assert!(ping(&from_a, b));
}

/// Bad cluster settings are refused and change nothing.
#[test]
fn bad_cluster_settings() {
    require_cluster_lab!();
    let lab = ClusterLab::new("bad", 0, "vxlan", 10);
    let out = lab.rete_anywhere(&[
        "cluster",
        "init",
        "--cidr",
        "10.99.0.0/16",
        "--subnet-len",
        "24",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already initialised with --cidr 10.244.0.0/16"),
        "{}",
        stderr(&out)
    );
    let out = lab.rete_anywhere(&["cluster", "init", "--cidr", CIDR, "--subnet-len", "24"]);
    assert!(
        out.status.success(),
        "repeating init is harmless: {}",
        stderr(&out)
    );
    let out = lab.rete_anywhere(&[
        "cluster",
        "init",
        "--cidr",
        "10.0.0.0/16",
        "--subnet-len",
        "8",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--subnet-len 8 does not fit"),
        "{}",
        stderr(&out)
    );
    let out = lab.rete_anywhere(&["agent", "--node-name", "x", "--lease-ttl", "1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--lease-ttl 1 is too short"),
        "{}",
        stderr(&out)
    );
    let out = lab.rete_anywhere(&["agent", "--backend", "ipip"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown backend \"ipip\""),
        "{}",
        stderr(&out)
    );
    assert!(lab.nodes().is_empty());
}

/// etcd over TLS with client certificates: settings, agents and listing
/// work with the certificates, and nothing works without them.
#[test]
fn etcd_over_tls() {
    require_cluster_lab!();
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: needs openssl to make the lab's certificates");
        return;
    }
    let lab = ClusterLab::with_tls("tls", 2, "vxlan", 10, true);
    let a = lab.container(0, "a");
    let b = lab.container(1, "b");
    assert!(ping(&lab.container_ns(0, "a"), b));
    assert!(ping(&lab.container_ns(1, "b"), a));
    // Without the client certificate etcd refuses the connection.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rete"));
    cmd.args(["node", "ls", "--etcd", &lab.etcd_url()])
        .args(["--etcd-ca"])
        .arg(lab.dir.join("ca.pem"))
        .env("RETE_STATE_DIR", lab.dir.join("admin2/state"))
        .env("RETE_RUN_DIR", lab.dir.join("admin2/run"));
    enter_on_exec(&mut cmd, &lab.outside);
    let out = cmd.output().unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Half a client identity is refused before connecting.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rete"));
    cmd.args(["node", "ls", "--etcd", &lab.etcd_url(), "--etcd-cert"])
        .arg(lab.dir.join("client.pem"))
        .env("RETE_STATE_DIR", lab.dir.join("admin2/state"))
        .env("RETE_RUN_DIR", lab.dir.join("admin2/run"));
    enter_on_exec(&mut cmd, &lab.outside);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--etcd-cert and --etcd-key go together"),
        "{}",
        stderr(&out)
    );
}

/// Runs `f` against the lab's etcd from inside the outside namespace (the
/// test process itself is in no namespace that reaches it).
fn with_etcd<T: Send>(
    lab: &ClusterLab,
    f: impl AsyncFnOnce(&mut etcd_client::Client) -> T + Send,
) -> T {
    let url = lab.etcd_url();
    common::in_ns(&lab.outside, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut client = etcd_client::Client::connect([url], None)
                .await
                .expect("connect to the lab's etcd");
            f(&mut client).await
        })
    })
}

/// An agent whose watch fell behind etcd's compaction lists again and
/// catches up. The agent is stopped (SIGSTOP) so that it reads nothing;
/// meanwhile a host joins and a burst of records comes and goes, enough to
/// fill the watch's stream, so etcd puts the watch aside; then etcd
/// compacts its history past the events the watch still owes. On SIGCONT
/// etcd tells the watch it was compacted, and the agent must list again to
/// learn the new host.
#[test]
fn a_watch_behind_compaction_relists() {
    require_cluster_lab!();
    let mut lab = ClusterLab::new("compaction", 2, "vxlan", 60);
    let a = {
        lab.container(0, "a");
        lab.container_ns(0, "a")
    };
    let h1_agent = lab.hosts[0].agent.as_ref().unwrap().id() as i32;
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(h1_agent, libc::SIGSTOP) };
    with_etcd(&lab, async |c| {
        let junk = "x".repeat(16 * 1024);
        for i in 0..400 {
            let key = format!("/rete/subnets/burst-{i}");
            c.put(key.as_str(), junk.as_str(), None).await.unwrap();
            c.delete(key.as_str(), None).await.unwrap();
        }
    });
    lab.add_host(3);
    lab.start_agent(2);
    lab.wait_for("h3 in node ls", Duration::from_secs(30), |l| {
        l.nodes().len() == 3
    });
    let h3 = lab.subnet_of("h3").unwrap();
    let compacted = with_etcd(&lab, async |c| {
        let rev = c
            .get("/rete/config", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        c.compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
        rev
    });
    assert!(
        !lab.routes(0).contains(&h3),
        "h1 cannot know h3 while stopped"
    );
    // SAFETY: as above.
    unsafe { libc::kill(h1_agent, libc::SIGCONT) };
    lab.wait_for(
        &format!("h1 to see its watch compacted (revision {compacted})"),
        Duration::from_secs(30),
        |l| {
            l.agent_log(0)
                .contains("fell behind etcd's compaction; listing again")
        },
    );
    lab.wait_for("h1 to learn h3 by listing", Duration::from_secs(30), |l| {
        l.routes(0).contains(&h3)
    });
    lab.wait_for_cluster_network(2);
    let c = lab.container(2, "c");
    assert!(ping(&a, c), "h1's container reaches h3's");
}

/// An agent paused for longer than its lease (a stopped process, a host
/// cut off) finds its record gone when it resumes: that is an expiry, not
/// `rete node rm`, so it claims its subnet again and stays in the cluster.
#[test]
fn a_paused_agent_whose_lease_expired_comes_back() {
    require_cluster_lab!();
    let mut lab = ClusterLab::new("paused", 2, "vxlan", 2);
    let h1 = lab.subnet_of("h1").unwrap();
    let pid = lab.hosts[0].agent.as_ref().unwrap().id() as i32;
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    lab.wait_for("h1's lease to expire", Duration::from_secs(30), |l| {
        l.subnet_of("h1").is_none()
    });
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    lab.wait_for("h1 back in node ls", Duration::from_secs(30), |l| {
        l.subnet_of("h1").is_some()
    });
    assert_eq!(lab.subnet_of("h1").unwrap(), h1, "the same subnet again");
    std::thread::sleep(Duration::from_secs(1));
    let agent = lab.hosts[0].agent.as_mut().unwrap();
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent must keep running: {}",
        lab.agent_log(0)
    );
    lab.wait_for("h2 to route to h1 again", Duration::from_secs(30), |l| {
        l.routes(1).contains(&h1)
    });
}
