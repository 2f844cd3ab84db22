//! A throwaway lab for integration tests: a "host" network namespace where
//! rete runs, an "outside" namespace on the host's uplink standing for the
//! rest of the world, and per-lab state, run and netns dirs. Everything lives
//! under one temporary directory and is removed on drop, also when a test
//! fails. The machine's root namespace is never touched.
//!
//! Traffic helpers run on threads that enter a namespace, with timeouts on
//! every socket, so no test can hang or reach beyond its own namespaces.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub mod podman_cli;

/// The host's address on its uplink, and the outside namespace's.
pub const UPLINK_HOST: &str = "192.0.2.1";
pub const UPLINK_OUTSIDE: &str = "192.0.2.2";
pub const UPLINK_HOST6: &str = "2001:db8:ff::1";
pub const UPLINK_OUTSIDE6: &str = "2001:db8:ff::2";

const TIMEOUT: Duration = Duration::from_secs(3);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Skips the test (returning early) unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to create network namespaces");
            return;
        }
    };
}

pub struct Lab {
    pub dir: PathBuf,
    pub host: PathBuf,
    pub outside: PathBuf,
}

impl Lab {
    /// A host namespace with an uplink veth to an outside namespace:
    /// host 192.0.2.1/24 + 2001:db8:ff::1/64, outside .2/::2, the host's
    /// default routes via the outside.
    pub fn new(name: &str) -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("rete-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("ns")).unwrap();
        let lab = Lab {
            host: dir.join("host.ns"),
            outside: dir.join("outside.ns"),
            dir,
        };
        rete::netns::create(&lab.host).expect("create host namespace");
        rete::netns::create(&lab.outside).expect("create outside namespace");
        lab.sh_host(&format!(
            "ip link set lo up && ip link add uplink type veth peer name wan netns {out} && \
             ip link set uplink up && ip addr add {h}/24 dev uplink && ip -6 addr add {h6}/64 dev uplink nodad && \
             ip route add default via {o} && ip -6 route add default via {o6}",
            out = lab.outside.display(),
            h = UPLINK_HOST,
            h6 = UPLINK_HOST6,
            o = UPLINK_OUTSIDE,
            o6 = UPLINK_OUTSIDE6
        ));
        lab.sh_outside(&format!(
            "ip link set lo up && ip link set wan up && ip addr add {o}/24 dev wan && ip -6 addr add {o6}/64 dev wan nodad",
            o = UPLINK_OUTSIDE,
            o6 = UPLINK_OUTSIDE6
        ));
        lab
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn netns_dir(&self) -> PathBuf {
        self.dir.join("ns")
    }

    /// The pinned namespace of a container rete created.
    pub fn container_ns(&self, name: &str) -> PathBuf {
        self.netns_dir().join(name)
    }

    /// A `rete` command that runs in the host namespace with this lab's dirs.
    pub fn rete_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rete"));
        cmd.args(args)
            .env("RETE_STATE_DIR", self.state_dir())
            .env("RETE_RUN_DIR", self.dir.join("run"))
            .env("RETE_NETNS_DIR", self.netns_dir())
            .env("RETE_NETNS_ETC_DIR", self.dir.join("etc"))
            .env("RETE_RESOLV_CONF", self.dir.join("upstream-resolv.conf"));
        enter_on_exec(&mut cmd, &self.host);
        cmd
    }

    pub fn rete(&self, args: &[&str]) -> Output {
        self.rete_cmd(args).output().expect("run rete")
    }

    /// Runs rete and asserts success; returns stdout.
    pub fn rete_ok(&self, args: &[&str]) -> String {
        let out = self.rete(args);
        assert!(
            out.status.success(),
            "rete {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs rete and asserts failure; returns stderr.
    pub fn rete_err(&self, args: &[&str]) -> String {
        let out = self.rete(args);
        assert!(
            !out.status.success(),
            "rete {args:?} should have failed but printed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `rete inspect NAME` as JSON.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.rete_ok(&["inspect", name])).unwrap();
        v[0].clone()
    }

    /// The name of network `network`'s bridge (or parent device).
    pub fn bridge_of(&self, network: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.rete_ok(&["network", "inspect", network])).unwrap();
        v[0]["bridge"].as_str().expect("a bridge name").to_string()
    }

    /// The first address of a container's endpoint on `network`.
    pub fn addr_of(&self, container: &str, network: &str, v6: bool) -> IpAddr {
        let c = self.inspect(container);
        for e in c["endpoints"].as_array().unwrap() {
            if e["network"] == network {
                for a in e["addresses"].as_array().unwrap() {
                    let ip: IpAddr = a
                        .as_str()
                        .unwrap()
                        .split('/')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    if ip.is_ipv6() == v6 {
                        return ip;
                    }
                }
            }
        }
        panic!(
            "{container} has no {} address on {network}",
            if v6 { "IPv6" } else { "IPv4" }
        )
    }

    pub fn sh_host(&self, script: &str) -> String {
        sh_in(&self.host, script)
    }

    pub fn sh_outside(&self, script: &str) -> String {
        sh_in(&self.outside, script)
    }

    /// Devices, addresses and nftables state of the host namespace, for
    /// residue checks.
    ///
    /// Host ends of veths that are down are waited for, up to 10 s, so they
    /// count only if the kernel never deletes them: those `rete rm` cut off
    /// (in no bridge: it leaves deleting the pair to the kernel's teardown
    /// of the container's namespace, moments later), and those of pairs
    /// whose deletion the kernel is finishing (rete returns once it has
    /// closed them).
    pub fn host_links(&self) -> Vec<String> {
        let mut listed = String::new();
        let cut_off = |l: &str| l.contains(": rete-") && !l.contains(",UP");
        for _ in 0..200 {
            listed = sh_in(&self.host, "ip -o link show");
            if !listed.lines().any(cut_off) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        link_names(&listed)
    }

    /// The host's links whose name starts with `prefix` (`rete-`: the host
    /// ends of container veths; `rbw-`: ifbs of bandwidth limits).
    pub fn links_named(&self, prefix: &str) -> Vec<String> {
        self.host_links()
            .into_iter()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    /// Elements of the published-port maps (empty when the table is gone).
    pub fn published_elements(&self) -> String {
        let mut out = String::new();
        for map in ["pub4", "pub4any", "pub6", "pub6any"] {
            let listed = sh_in_allow_fail(
                &self.host,
                &format!("nft list map inet rete {map} 2>/dev/null"),
            );
            if listed.contains("elements") {
                out.push_str(&listed);
            }
        }
        out
    }

    pub fn nft(&self) -> String {
        sh_in_allow_fail(&self.host, "nft list table inet rete 2>/dev/null")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // End the lab's name resolver (it also ends by itself once the
        // state dir is gone), then unpin every namespace; devices and
        // nftables state vanish with their namespaces.
        for pidfile in [
            self.dir.join("run/dns.pid"),
            self.dir.join("cni-run/dns.pid"),
        ] {
            if let Some(pid) = std::fs::read_to_string(pidfile)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Ok(dir) = std::fs::read_dir(self.netns_dir()) {
            for e in dir.flatten() {
                let _ = rete::netns::remove(&e.path());
            }
        }
        let _ = rete::netns::remove(&self.host);
        let _ = rete::netns::remove(&self.outside);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes `cmd` enter the network namespace at `ns` between fork and exec.
pub fn enter_on_exec(cmd: &mut Command, ns: &Path) {
    let f = File::open(ns).expect("open namespace");
    // SAFETY: setns is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The link's name in a line of `ip -o link show`, without its `@peer`.
pub fn link_name(line: &str) -> Option<&str> {
    line.split(": ")
        .nth(1)
        .map(|n| n.split('@').next().unwrap_or(n))
}

/// The names of the links `ip -o link show` listed.
pub fn link_names(ip_o_link: &str) -> Vec<String> {
    ip_o_link
        .lines()
        .filter_map(link_name)
        .map(str::to_string)
        .collect()
}

/// Runs a shell script inside a namespace; panics with its output on failure.
pub fn sh_in(ns: &Path, script: &str) -> String {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    enter_on_exec(&mut cmd, ns);
    let out = cmd.output().expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh_in_allow_fail(ns: &Path, script: &str) -> String {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    enter_on_exec(&mut cmd, ns);
    let out = cmd.output().expect("run sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a thread inside the namespace at `ns`.
pub fn in_ns<T: Send>(ns: &Path, f: impl FnOnce() -> T + Send) -> T {
    let file = File::open(ns).expect("open namespace");
    rete::netns::run_in(&file, f).expect("enter namespace")
}

/// A TCP server in `ns` on `addr:port` that answers each connection with
/// `reply` followed by the peer's address, for up to `connections`
/// connections or until dropped (3 s per accept).
/// Nothing rete made is left in the host namespace: no `rete*` device, no
/// nftables table.
pub fn assert_no_residue(lab: &Lab) {
    let links = lab.host_links();
    assert!(
        !links.iter().any(|l| l.starts_with("rete")),
        "rete devices left behind: {links:?}"
    );
    assert_eq!(lab.nft(), "", "the nftables table should be gone");
}

/// The store of the lab's state dir holds no container, lease or port
/// claim: what removing everything must leave.
pub fn assert_store_holds_nothing(lab: &Lab) {
    let db = rusqlite::Connection::open(lab.state_dir().join("rete.db")).expect("open the store");
    for table in ["containers", "leases", "ports"] {
        let rows: i64 = db
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count rows");
        assert_eq!(rows, 0, "rows left in the store's {table}");
    }
}

/// A server on a thread inside a namespace, which it holds (as a process
/// in a container would) until it has served its count, its deadline
/// passed or it is dropped.
pub struct Server {
    handle: Option<std::thread::JoinHandle<()>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Server {
    pub fn tcp(ns: &Path, addr: IpAddr, port: u16, reply: &str, connections: usize) -> Server {
        let file = File::open(ns).unwrap();
        let reply = reply.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let l = TcpListener::bind(SocketAddr::new(addr, port)).expect("bind test server");
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            let mut served = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while served < connections
                && std::time::Instant::now() < deadline
                && !stopped.load(Ordering::Relaxed)
            {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        s.set_nonblocking(false).unwrap();
                        let _ = s.write_all(format!("{reply} {}", peer.ip()).as_bytes());
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        rx.recv_timeout(TIMEOUT).expect("server started");
        Server {
            handle: Some(handle),
            stop,
        }
    }

    pub fn udp(ns: &Path, addr: IpAddr, port: u16, reply: &str, datagrams: usize) -> Server {
        let file = File::open(ns).unwrap();
        let reply = reply.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let s = UdpSocket::bind(SocketAddr::new(addr, port)).expect("bind test server");
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            let mut served = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while served < datagrams
                && std::time::Instant::now() < deadline
                && !stopped.load(Ordering::Relaxed)
            {
                if let Ok((_, peer)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(format!("{reply} {}", peer.ip()).as_bytes(), peer);
                    served += 1;
                }
            }
        });
        rx.recv_timeout(TIMEOUT).expect("server started");
        Server {
            handle: Some(handle),
            stop,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The thread looks at the flag at least every 200 ms; joining it
        // lets go of the namespace.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Connects from `ns` to `addr:port` over TCP; returns what the server said,
/// or None if nothing answered within 3 s.
pub fn tcp_get(ns: &Path, addr: IpAddr, port: u16) -> Option<String> {
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(addr, port), TIMEOUT).ok()?;
        s.set_read_timeout(Some(TIMEOUT)).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
}

/// Sends one UDP datagram from `ns` and waits for the reply (3 tries).
pub fn udp_get(ns: &Path, addr: IpAddr, port: u16) -> Option<String> {
    in_ns(ns, move || {
        let bind: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .unwrap();
        let s = UdpSocket::bind(bind).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let mut buf = [0u8; 512];
        for _ in 0..3 {
            s.send_to(b"ping", SocketAddr::new(addr, port)).ok()?;
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    })
}

/// Whether `to` answers ICMP echo from `ns`: up to 3 tries of 1 s each
/// (the first echo of a fresh path waits for ARP and may be lost on a
/// loaded machine).
pub fn ping(ns: &Path, to: IpAddr) -> bool {
    (0..3).any(|_| ping_once(ns, to))
}

/// One echo with a 1 s wait: for asserting that `to` is out of reach.
pub fn ping_once(ns: &Path, to: IpAddr) -> bool {
    let mut cmd = Command::new("busybox");
    cmd.args(["ping", "-c", "1", "-W", "1", &to.to_string()]);
    enter_on_exec(&mut cmd, ns);
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

/// Bytes sent in one [`transfer`].
pub const BULK: usize = 4 << 20;

/// Sends BULK bytes over TCP from the namespace `from` to a listener in
/// `to` on `addr`; returns how many arrived in order, each where it was
/// sent (byte i is i mod 251; 10 s without progress ends either side).
pub fn transfer(from: &Path, to: &Path, addr: IpAddr) -> usize {
    let at = SocketAddr::new(addr, 7300);
    transfer_via(from, to, at, at)
}

/// [`transfer`] to a listener on `listen` in `to`, the sender connecting
/// to `connect` (a published port of it, say).
pub fn transfer_via(from: &Path, to: &Path, listen: SocketAddr, connect: SocketAddr) -> usize {
    let listener = in_ns(to, || TcpListener::bind(listen).unwrap());
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            let intact = buf[..n]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == ((got + i) % 251) as u8);
            if !intact {
                break;
            }
            got += n;
        }
        got
    });
    in_ns(from, || {
        let mut s = TcpStream::connect_timeout(&connect, Duration::from_secs(3)).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let data: Vec<u8> = (0..BULK).map(|i| (i % 251) as u8).collect();
        s.write_all(&data).unwrap();
    });
    receiver.join().unwrap()
}

/// Bytes link `dev` of namespace `ns` has sent.
pub fn tx_bytes(ns: &Path, dev: &str) -> u64 {
    link_bytes(ns, dev, "tx")
}

/// Bytes link `dev` of namespace `ns` has received.
pub fn rx_bytes(ns: &Path, dev: &str) -> u64 {
    link_bytes(ns, dev, "rx")
}

fn link_bytes(ns: &Path, dev: &str, direction: &str) -> u64 {
    let out = sh_in(ns, &format!("ip -s -j link show {dev}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["stats64"][direction]["bytes"].as_u64().unwrap()
}
