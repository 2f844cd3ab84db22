//! rete as Podman's network backend, driven by the real Podman (Debian's
//! 4.3): rete linked as `netavark` first in Podman's `helper_binaries_dir`,
//! Podman running inside each lab's "host" namespace with a private
//! configuration, storage and image (imported from busybox-static). Every
//! test is something a Podman user does: run containers on the default and
//! their own networks, publish ports, share namespaces, reload the firewall,
//! remove everything. Plus the protocol itself, checked against Debian's
//! netavark 1.4 on the same request.
//!
//! Podman tests run one at a time: each starts several Podman processes,
//! and the machine has two cores.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use common::podman_cli::{containers_conf, PodmanCli};
use common::*;
use serde_json::{json, Value};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Podman and its runtime helpers, bounded in time.
const PODMAN_TIMEOUT: &str = "120";

/// Skips the test unless root, Podman and busybox-static are there.
macro_rules! require_podman {
    () => {
        require_root!();
        if !Path::new("/usr/bin/podman").exists() || !Path::new("/bin/busybox").exists() {
            eprintln!(
                "skipped: needs podman and busybox-static (apt-get install podman busybox-static)"
            );
            return;
        }
    };
}

/// A lab with Podman set up to use rete as its netavark.
struct Podman {
    lab: Lab,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Podman {
    fn new(name: &str) -> Podman {
        let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let lab = Lab::new(&format!("podman-{name}"));
        let d = lab.dir.clone();
        let bin = d.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rete"), bin.join("netavark")).unwrap();
        // `podman run --rm` tears down from `podman container cleanup`,
        // which conmon starts without our environment: the file beside the
        // link points it at the lab's store too.
        std::fs::write(
            bin.join("rete.env"),
            format!(
                "RETE_STATE_DIR={}\nRETE_RUN_DIR={}\nRETE_NETNS_DIR={}\nRETE_NETNS_ETC_DIR={}\n",
                lab.state_dir().display(),
                d.join("run").display(),
                lab.netns_dir().display(),
                d.join("etc-netns").display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("containers.conf"),
            containers_conf(
                &bin,
                &format!(
                    r#"lock_type = "file"
tmp_dir = "{d}/podman-tmp"
static_dir = "{d}/podman-static"
volume_path = "{d}/podman-volumes"

[network]
network_config_dir = "{d}/podman-networks"
"#,
                    d = d.display()
                ),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/podman-graph\"\nrunroot = \"{d}/podman-run\"\n",
                d = d.display()
            ),
        )
        .unwrap();
        let p = Podman {
            lab,
            _serial: serial,
        };
        p.import_busybox();
        p
    }

    /// A one-binary image: busybox-static with a link per applet.
    fn import_busybox(&self) {
        let root = self.lab.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
        let tar = self.lab.dir.join("busybox.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        self.ok(&["import", tar.to_str().unwrap(), "localhost/busybox:latest"]);
    }

    /// `podman run -d` of a TCP server answering "hello from NAME" on `port`.
    fn serve(&self, name: &str, extra: &[&str], ports: &[u16]) -> String {
        let script: Vec<String> = ports
            .iter()
            .map(|p| format!("nc -ll -p {p} -e echo hello from {name} &"))
            .collect();
        let script = format!("{} wait", script.join(" "));
        let mut args = vec!["run", "-d", "--name", name];
        args.extend(extra);
        args.extend(["localhost/busybox", "sh", "-c", &script]);
        let id = self.ok(&args).trim().to_string();
        // The servers listen shortly after the container starts.
        let ns = self.netns_of(name);
        for _ in 0..50 {
            let listening = sh_in_allow_fail(&ns, "cat /proc/net/tcp /proc/net/tcp6");
            if ports.iter().all(|p| {
                listening.contains(&format!(":{p:04X} 00000000:0000 0A"))
                    || listening.contains(&format!(
                        ":{p:04X} 00000000000000000000000000000000:0000 0A"
                    ))
            }) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        id
    }

    /// The namespace Podman pinned for a container.
    fn netns_of(&self, name: &str) -> PathBuf {
        PathBuf::from(
            self.inspect(name)["NetworkSettings"]["SandboxKey"]
                .as_str()
                .unwrap(),
        )
    }

    fn exec(&self, name: &str, script: &str) -> Output {
        self.run(&["exec", name, "sh", "-c", script])
    }

    /// Containers rete knows, by name (Podman's container IDs).
    fn rete_containers(&self) -> Vec<String> {
        self.lab
            .rete_ok(&["ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn rete_links(&self) -> Vec<String> {
        self.lab.links_named("rete-")
    }
}

impl PodmanCli for Podman {
    fn cmd(&self, args: &[&str]) -> Command {
        let d = &self.lab.dir;
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", PODMAN_TIMEOUT, "podman"])
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", "/dev/null")
            // Podman passes its environment to netavark: this is how rete,
            // called as netavark, finds the lab's store.
            .env("RETE_STATE_DIR", self.lab.state_dir())
            .env("RETE_RUN_DIR", d.join("run"))
            .env("RETE_NETNS_DIR", self.lab.netns_dir())
            .env("RETE_NETNS_ETC_DIR", d.join("etc-netns"))
            .stdin(Stdio::null());
        enter_on_exec(&mut cmd, &self.lab.host);
        cmd
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Podman pins namespaces in the machine's /run/netns: note them,
        // remove the containers (which unpins them), then unpin whatever a
        // failed test left.
        let ids = self.run(&["ps", "-aq", "--no-trunc"]);
        let mut pinned = Vec::new();
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let out = self.run(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", id]);
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if path.starts_with("/run/netns/netns-") {
                pinned.push(PathBuf::from(path));
            }
        }
        let _ = self.run(&["rm", "-af", "-t", "0"]);
        for p in pinned {
            if p.exists() {
                let _ = rete::netns::remove(&p);
            }
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn uplink() -> IpAddr {
    ip(UPLINK_HOST)
}

#[test]
fn run_on_the_default_network_gets_an_address_rete_knows() {
    require_podman!();
    let p = Podman::new("default");
    p.serve("web", &[], &[80]);
    let addr = p.ip_of("web", "podman");
    assert!(
        "10.88.0.0/16"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&addr),
        "{addr}"
    );
    // rete holds the container under Podman's ID, with Podman's address.
    let id = p.id_of("web");
    assert_eq!(p.rete_containers(), std::slice::from_ref(&id));
    assert_eq!(p.lab.addr_of(&id, "podman", false), addr);
    let net = &serde_json::from_str::<Value>(&p.lab.rete_ok(&["network", "inspect", "podman"]))
        .unwrap()[0];
    assert_eq!(net["bridge"], "podman0");
    // The container is reachable from the host over the bridge.
    assert_eq!(
        tcp_get(&p.lab.host, addr, 80).as_deref(),
        Some("hello from web\n")
    );
    // And it reaches the outside, masqueraded behind the host's address.
    let _srv = Server::tcp(&p.lab.outside, ip(UPLINK_OUTSIDE), 7000, "outside", 1);
    let out = p.exec("web", &format!("nc -w 3 {UPLINK_OUTSIDE} 7000"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("outside {UPLINK_HOST}")
    );
}

#[test]
fn published_ports_answer_from_outside() {
    require_podman!();
    let p = Podman::new("ports");
    p.serve(
        "web",
        &[
            "-p",
            "8080:80",
            "-p",
            "127.0.0.1::80",
            "-p",
            "9000-9001:81-82",
        ],
        &[80, 81, 82],
    );
    let outside = &p.lab.outside;
    assert_eq!(
        tcp_get(outside, uplink(), 8080).as_deref(),
        Some("hello from web\n")
    );
    for port in [9000, 9001] {
        assert_eq!(
            tcp_get(outside, uplink(), port).as_deref(),
            Some("hello from web\n"),
            "range port {port}"
        );
    }
    // IP::CPORT: Podman picks the host port; it answers on loopback only.
    let listed = p.ok(&["port", "web", "80"]);
    let local = listed
        .lines()
        .find_map(|l| l.strip_prefix("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no 127.0.0.1 mapping in {listed}"));
    let local: u16 = local.trim().parse().unwrap();
    assert_eq!(
        tcp_get(&p.lab.host, ip("127.0.0.1"), local).as_deref(),
        Some("hello from web\n")
    );
    assert_eq!(tcp_get(outside, uplink(), local), None);

    // /udp: a responder inside the container's namespace.
    p.ok(&[
        "run",
        "-d",
        "--name",
        "dns",
        "-p",
        "5353:53/udp",
        "localhost/busybox",
        "sleep",
        "600",
    ]);
    let dns_ns = p.netns_of("dns");
    let dns_addr = p.ip_of("dns", "podman");
    let _srv = Server::udp(&dns_ns, dns_addr, 53, "udp reply", 1);
    let reply = udp_get(outside, uplink(), 5353).expect("an answer on 5353/udp");
    assert_eq!(reply, format!("udp reply {UPLINK_OUTSIDE}"));
    // No TCP on the UDP mapping.
    assert_eq!(tcp_get(outside, uplink(), 5353), None);

    // The mappings are rete's, on the container Podman made.
    let c = p.lab.inspect(&p.id_of("web"));
    let ports: Vec<String> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}:{}", m["host_port"], m["container_port"]))
        .collect();
    for want in ["8080:80", "9000:81", "9001:82"] {
        assert!(ports.iter().any(|p| p == want), "{want} in {ports:?}");
    }
}

#[test]
fn network_modes_none_host_and_container() {
    require_podman!();
    let p = Podman::new("modes");
    let none = p.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/busybox",
        "ip",
        "-o",
        "link",
    ]);
    assert_eq!(none.lines().count(), 1, "only lo: {none}");
    let host = p.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "localhost/busybox",
        "ip",
        "-o",
        "addr",
    ]);
    assert!(host.contains(UPLINK_HOST), "the lab host's uplink: {host}");
    assert!(p.rete_containers().is_empty());

    p.serve("web", &[], &[80]);
    let addr = p.ip_of("web", "podman");
    let shared = p.ok(&[
        "run",
        "--rm",
        "--network",
        "container:web",
        "localhost/busybox",
        "ip",
        "-o",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(shared.contains(&addr.to_string()), "{shared}");
    // The sharer is no attachment of its own.
    assert_eq!(p.rete_containers(), [p.id_of("web")]);
}

#[test]
fn network_create_internal_subnet_gateway_ipv6() {
    require_podman!();
    let p = Podman::new("create");
    p.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.123.0.0/24",
        "--gateway",
        "10.123.0.254",
        "--ipv6",
        "inner",
    ]);
    p.serve("db", &["--network", "inner"], &[80]);
    let addr = p.ip_of("db", "inner");
    assert!(addr.to_string().starts_with("10.123.0."), "{addr}");
    let inside = String::from_utf8_lossy(&p.exec("db", "ip -o addr show eth0; ip route").stdout)
        .into_owned();
    assert!(inside.contains("inet6 fd"), "an IPv6 address: {inside}");
    assert!(
        !inside.contains("default"),
        "internal: no default route: {inside}"
    );

    let net = &serde_json::from_str::<Value>(&p.lab.rete_ok(&["network", "inspect", "inner"]))
        .unwrap()[0];
    assert_eq!(net["internal"], true);
    assert_eq!(net["subnets"][0]["gateway"], "10.123.0.254");
    assert!(net["subnets"][1]["subnet"]
        .as_str()
        .unwrap()
        .starts_with("fd"));
    let bridge = net["bridge"].as_str().unwrap();
    assert!(bridge.starts_with("podman"), "{bridge}");
    assert!(p
        .lab
        .sh_host(&format!("ip -o addr show {bridge}"))
        .contains("10.123.0.254/24"));

    // Reachable on its bridge, but nothing goes out.
    assert_eq!(
        tcp_get(&p.lab.host, addr, 80).as_deref(),
        Some("hello from db\n")
    );
    let _srv = Server::tcp(&p.lab.outside, ip(UPLINK_OUTSIDE), 7000, "outside", 1);
    let out = p.exec("db", &format!("nc -w 2 {UPLINK_OUTSIDE} 7000"));
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "an internal network must not reach out"
    );
}

#[test]
fn two_networks_per_container_and_isolation() {
    require_podman!();
    let p = Podman::new("multi");
    p.ok(&["network", "create", "--subnet", "10.31.0.0/24", "front"]);
    p.ok(&["network", "create", "--subnet", "10.32.0.0/24", "back"]);
    p.ok(&[
        "network",
        "create",
        "--subnet",
        "10.33.0.0/24",
        "--opt",
        "isolate=true",
        "vault",
    ]);
    p.serve("app", &["--network", "front,back"], &[80]);
    p.serve("db", &["--network", "back"], &[80]);
    p.serve("secret", &["--network", "vault"], &[80]);

    let links = String::from_utf8_lossy(&p.exec("app", "ip -o addr").stdout).into_owned();
    assert!(
        links.contains("eth0") && links.contains("10.31.0."),
        "{links}"
    );
    assert!(
        links.contains("eth1") && links.contains("10.32.0."),
        "{links}"
    );
    let c = p.lab.inspect(&p.id_of("app"));
    let mut nets: Vec<&str> = c["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["network"].as_str().unwrap())
        .collect();
    nets.sort();
    assert_eq!(nets, ["back", "front"]);

    // Both of app's networks carry traffic.
    let db = p.ip_of("db", "back");
    let out = p.exec("app", &format!("nc -w 3 {db} 80"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from db\n");

    // Podman's networks are not isolated unless asked (as with netavark):
    // front reaches back's containers through the host.
    p.serve("web", &["--network", "front"], &[80]);
    let out = p.exec("web", &format!("nc -w 3 {db} 80"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from db\n");

    // isolate=true cuts vault off from the others, both ways.
    let secret = p.ip_of("secret", "vault");
    let out = p.exec("web", &format!("nc -w 2 {secret} 80"));
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "vault is isolated"
    );
    let web = p.ip_of("web", "front");
    let out = p.exec("secret", &format!("nc -w 2 {web} 80"));
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "vault is isolated"
    );
    // The host still reaches it.
    assert_eq!(
        tcp_get(&p.lab.host, secret, 80).as_deref(),
        Some("hello from secret\n")
    );
}

#[test]
fn names_resolve_on_networks_with_dns() {
    require_podman!();
    let p = Podman::new("dns");
    p.ok(&["network", "create", "--subnet", "10.41.0.0/24", "named"]);
    p.serve(
        "web",
        &["--network", "named", "--network-alias", "www"],
        &[80],
    );
    let web = p.ip_of("web", "named");
    p.ok(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "named",
        "localhost/busybox",
        "sleep",
        "600",
    ]);
    let resolv =
        String::from_utf8_lossy(&p.exec("client", "cat /etc/resolv.conf").stdout).into_owned();
    assert!(resolv.contains("nameserver 10.41.0.1"), "{resolv}");
    assert!(resolv.contains("dns.podman"), "{resolv}");
    for name in ["web", "www", "web.dns.podman"] {
        let mut answer = String::new();
        // The resolver starts with the first DNS-enabled attachment.
        for _ in 0..30 {
            let out = p.exec("client", &format!("nslookup {name}"));
            answer = String::from_utf8_lossy(&out.stdout).into_owned();
            if answer.contains(&web.to_string()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert!(answer.contains(&web.to_string()), "{name}: {answer}");
    }
    let out = p.exec("client", "nc -w 3 web 80");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from web\n");
}

#[test]
fn network_reload_restores_the_firewall_after_a_flush() {
    require_podman!();
    let p = Podman::new("reload");
    p.serve("web", &["-p", "8080:80"], &[80]);
    p.ok(&[
        "run",
        "-d",
        "--name",
        "quiet",
        "localhost/busybox",
        "sleep",
        "600",
    ]);
    // Each probe listens on a port of its own: a server nobody reached
    // keeps its port until its deadline.
    let probe = std::cell::Cell::new(7000u16);
    let reaches_out = |p: &Podman| {
        let port = probe.get();
        probe.set(port + 1);
        let _srv = Server::tcp(&p.lab.outside, ip(UPLINK_OUTSIDE), port, "outside", 1);
        let out = p.exec("quiet", &format!("nc -w 2 {UPLINK_OUTSIDE} {port}"));
        String::from_utf8_lossy(&out.stdout) == format!("outside {UPLINK_HOST}")
    };
    assert!(tcp_get(&p.lab.outside, uplink(), 8080).is_some());
    assert!(reaches_out(&p));

    p.lab.sh_host("nft flush ruleset");
    // The published port takes the network's shortcut from the uplink,
    // past the firewall; masquerade is the firewall's.
    assert_eq!(
        tcp_get(&p.lab.outside, uplink(), 8080).as_deref(),
        Some("hello from web\n")
    );
    assert!(!reaches_out(&p), "no masquerade after the flush");

    // Reloading a container without published ports restores everything.
    p.ok(&["network", "reload", "quiet"]);
    assert!(reaches_out(&p), "masquerade is back");
    assert_eq!(
        tcp_get(&p.lab.outside, uplink(), 8080).as_deref(),
        Some("hello from web\n")
    );

    p.lab.sh_host("nft flush ruleset");
    p.ok(&["network", "reload", "--all"]);
    assert_eq!(
        tcp_get(&p.lab.outside, uplink(), 8080).as_deref(),
        Some("hello from web\n")
    );
    // The addresses survived the reload.
    assert_eq!(
        p.lab.addr_of(&p.id_of("quiet"), "podman", false),
        p.ip_of("quiet", "podman")
    );
}

/// When the kernel lost what rete made while the store lives on (a reboot;
/// rootless Podman's namespace made anew), Podman's next container on the
/// network brings it all back instead of failing: the bridge, the firewall
/// table, and the veth of a container whose namespace survived.
#[test]
fn setup_rebuilds_a_network_the_kernel_lost() {
    require_podman!();
    let p = Podman::new("lost");
    p.ok(&["network", "create", "--subnet", "10.97.0.0/24", "lost"]);
    p.serve("a", &["--network", "lost"], &[80]);
    let a = p.ip_of("a", "lost");
    let net =
        &serde_json::from_str::<Value>(&p.lab.rete_ok(&["network", "inspect", "lost"])).unwrap()[0];
    let bridge = net["bridge"].as_str().unwrap().to_string();
    let mut script = format!("ip link del {bridge} && nft delete table inet rete");
    for l in p.rete_links() {
        script.push_str(&format!(" && ip link del {l}"));
    }
    sh_in(&p.lab.host, &script);
    assert_eq!(tcp_get(&p.lab.host, a, 80), None, "a still answers");
    let out = p.ok(&[
        "run",
        "--rm",
        "--network",
        "lost",
        "localhost/busybox",
        "sh",
        "-c",
        &format!("nc -w 3 {a} 80"),
    ]);
    assert_eq!(out.trim(), "hello from a");
    assert_eq!(
        tcp_get(&p.lab.host, a, 80).as_deref(),
        Some("hello from a\n")
    );
    assert!(sh_in(&p.lab.host, "nft list tables").contains("inet rete"));
}

#[test]
fn rm_leaves_nothing_behind() {
    require_podman!();
    let p = Podman::new("rm");
    p.ok(&["network", "create", "--subnet", "10.51.0.0/24", "extra"]);
    p.serve("a", &["-p", "8080:80"], &[80]);
    p.serve("b", &["--network", "podman,extra"], &[80]);
    p.ok(&["run", "--rm", "localhost/busybox", "true"]);
    let pinned: Vec<PathBuf> = ["a", "b"].iter().map(|c| p.netns_of(c)).collect();
    assert_eq!(p.rete_containers().len(), 2);
    assert!(!p.rete_links().is_empty());

    p.ok(&["rm", "-f", "-t", "0", "a", "b"]);
    assert!(p.rete_containers().is_empty());
    assert!(p.rete_links().is_empty(), "{:?}", p.rete_links());
    // Like netavark, the bridges go with their last container.
    assert_eq!(p.lab.rete_ok(&["network", "ls", "-q"]).trim(), "");
    let links = p.lab.host_links();
    assert!(!links.iter().any(|l| l.starts_with("podman")), "{links:?}");
    assert!(!p.lab.nft().contains("8080"));
    for ns in pinned {
        assert!(!ns.exists(), "{} is still pinned", ns.display());
    }
    // Running again works from scratch.
    p.serve("a", &["-p", "8080:80"], &[80]);
    assert_eq!(
        tcp_get(&p.lab.outside, uplink(), 8080).as_deref(),
        Some("hello from a\n")
    );
}

#[test]
fn parallel_runs_share_a_network_that_comes_and_goes() {
    require_podman!();
    let p = Podman::new("parallel");
    p.ok(&["network", "create", "--subnet", "10.71.0.0/24", "busy"]);
    // Four Podman processes at once, twice each: setups race to make the
    // network, teardowns race to remove it while others set up.
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|i| {
                let p = &p;
                s.spawn(move || {
                    for round in 0..2 {
                        let out = p.run(&[
                            "run",
                            "--rm",
                            "--network",
                            "busy",
                            "localhost/busybox",
                            "ip",
                            "-o",
                            "addr",
                            "show",
                            "eth0",
                        ]);
                        assert!(
                            out.status.success(),
                            "run {i}.{round}: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                        assert!(String::from_utf8_lossy(&out.stdout).contains("10.71.0."));
                    }
                })
            })
            .collect();
        for r in runs {
            r.join().unwrap();
        }
    });
    assert!(p.rete_containers().is_empty());
    assert!(p.rete_links().is_empty());
    assert_eq!(p.lab.rete_ok(&["network", "ls", "-q"]).trim(), "");
}

#[test]
fn macvlan_networks_put_containers_on_the_parent_link() {
    require_podman!();
    let p = Podman::new("macvlan");
    p.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=uplink",
        "--subnet",
        "192.0.2.0/24",
        "--gateway",
        UPLINK_OUTSIDE,
        "--ip-range",
        "192.0.2.128/25",
        "mv",
    ]);
    // A published port is accepted and, as with netavark, not forwarded:
    // the container is reached at its own address.
    p.serve("web", &["--network", "mv", "-p", "8080:80"], &[80]);
    let addr = p.ip_of("web", "mv");
    assert!(
        "192.0.2.128/25"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&addr),
        "{addr}"
    );
    let links = sh_in(&p.netns_of("web"), "ip -d link show eth0");
    assert!(links.contains("macvlan mode bridge"), "{links}");
    assert_eq!(
        tcp_get(&p.lab.outside, addr, 80).as_deref(),
        Some("hello from web\n"),
        "outside -> the container at its own address"
    );
    let _srv = Server::tcp(&p.lab.outside, ip(UPLINK_OUTSIDE), 7000, "outside", 1);
    let out = p.exec("web", &format!("nc -w 3 {UPLINK_OUTSIDE} 7000"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("outside {addr}"),
        "no NAT on the way out"
    );
    let net =
        &serde_json::from_str::<Value>(&p.lab.rete_ok(&["network", "inspect", "mv"])).unwrap()[0];
    assert_eq!(net["driver"], "macvlan");
    assert_eq!(net["bridge"], "uplink");

    p.ok(&["rm", "-f", "-t", "0", "web"]);
    assert!(p.rete_containers().is_empty());
    assert!(p.lab.host_links().contains(&"uplink".to_string()));
    assert!(p.rete_links().is_empty());
}

#[test]
fn unsupported_drivers_fail_with_a_clear_error() {
    require_podman!();
    let p = Podman::new("ipvlan");
    let made = p.run(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "-o",
        "parent=uplink",
        "--subnet",
        "192.0.2.0/24",
        "iv",
    ]);
    if !made.status.success() {
        // Podman itself refuses the driver, naming it: nothing reaches
        // rete (errors_are_json_on_stdout_with_status_1 sends rete an
        // ipvlan network directly).
        let err = String::from_utf8_lossy(&made.stderr);
        assert!(err.contains("ipvlan"), "{err}");
        assert_eq!(p.lab.rete_ok(&["network", "ls", "-q"]).trim(), "");
        return;
    }
    let err = p.err(&[
        "run",
        "--rm",
        "--network",
        "iv",
        "localhost/busybox",
        "true",
    ]);
    assert!(err.contains("ipvlan driver"), "{err}");
    assert!(p.rete_containers().is_empty());
    assert_eq!(p.lab.rete_ok(&["network", "ls", "-q"]).trim(), "");
}

// The protocol, without Podman: rete called as netavark with the requests
// Podman sends, next to Debian's netavark 1.4 on the same request.

/// rete under the name `netavark`, in a lab's host namespace.
fn as_netavark(lab: &Lab, args: &[&str], input: &str) -> (Value, bool) {
    let bin = lab.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("netavark");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rete"), &link).unwrap();
    }
    let mut cmd = Command::new(&link);
    cmd.args(args)
        .env("RETE_STATE_DIR", lab.state_dir())
        .env("RETE_RUN_DIR", lab.dir.join("run"))
        .env("RETE_NETNS_DIR", lab.netns_dir());
    enter_on_exec(&mut cmd, &lab.host);
    run_with_input(cmd, input)
}

fn run_with_input(mut cmd: Command, input: &str) -> (Value, bool) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A request refused on its flags alone may exit before reading its
    // input: a broken pipe here is that, not a failure.
    match child.stdin.take().unwrap().write_all(input.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
    };
    (v, out.status.success())
}

/// A request as Podman 4.3 writes it: two networks, one with a lease range
/// and IPv6, published ports over both protocols.
fn two_network_request(container_id: &str) -> Value {
    json!({
        "container_id": container_id,
        "container_name": "web",
        "port_mappings": [
            {"host_ip": "", "container_port": 80, "host_port": 8080, "range": 2, "protocol": "tcp"},
            {"host_ip": "", "container_port": 53, "host_port": 5353, "range": 1, "protocol": "udp"}
        ],
        "networks": {
            "alpha": {"static_ips": ["10.61.0.130", "fd61::2"], "aliases": ["abc"], "interface_name": "eth0"},
            "beta": {"static_ips": ["10.62.0.2"], "interface_name": "eth1"}
        },
        "network_info": {
            "alpha": {
                "name": "alpha", "id": "a".repeat(64), "driver": "bridge", "network_interface": "podman1",
                "created": "2026-11-23T19:54:15.659025932Z",
                "subnets": [
                    {"subnet": "10.61.0.0/24", "gateway": "10.61.0.1",
                     "lease_range": {"start_ip": "10.61.0.129", "end_ip": "10.61.0.254"}},
                    {"subnet": "fd61::/64", "gateway": "fd61::1"}
                ],
                "ipv6_enabled": true, "internal": false, "dns_enabled": false,
                "ipam_options": {"driver": "host-local"}
            },
            "beta": {
                "name": "beta", "id": "b".repeat(64), "driver": "bridge", "network_interface": "podman2",
                "subnets": [{"subnet": "10.62.0.0/24", "gateway": "10.62.0.1"}],
                "ipv6_enabled": false, "internal": false, "dns_enabled": false,
                "ipam_options": {"driver": "host-local"}
            }
        }
    })
}

/// The status blocks without MAC addresses (each implementation picks its
/// own).
fn without_macs(mut v: Value) -> Value {
    for block in v.as_object_mut().unwrap().values_mut() {
        for iface in block["interfaces"].as_object_mut().unwrap().values_mut() {
            let mac = iface["mac_address"].as_str().unwrap();
            assert_eq!(mac.len(), 17, "a MAC address: {mac}");
            iface["mac_address"] = Value::Null;
        }
    }
    v
}

#[test]
fn setup_prints_what_netavark_prints() {
    require_root!();
    let netavark = Path::new("/usr/lib/podman/netavark");
    let ours = Lab::new("podman-proto-rete");
    let ns = ours.netns_dir().join("c1");
    rete::netns::create(&ns).unwrap();
    let req = two_network_request("c1").to_string();
    let (rete_out, ok) = as_netavark(
        &ours,
        &[
            "--config",
            "/tmp",
            "--rootless=false",
            "setup",
            ns.to_str().unwrap(),
        ],
        &req,
    );
    assert!(ok, "{rete_out}");

    // The attachment is real: addresses inside, ports from outside.
    let inside = sh_in(&ns, "ip -o addr");
    for a in ["10.61.0.130/24", "fd61::2/64", "10.62.0.2/24"] {
        assert!(inside.contains(a), "{a} in {inside}");
    }
    let _srv = Server::tcp(&ns, ip("10.61.0.130"), 81, "second port", 1);
    assert_eq!(
        tcp_get(&ours.outside, uplink(), 8081),
        Some(format!("second port {UPLINK_OUTSIDE}"))
    );
    let _srv = Server::udp(&ns, ip("10.61.0.130"), 53, "udp", 1);
    assert_eq!(
        udp_get(&ours.outside, uplink(), 5353),
        Some(format!("udp {UPLINK_OUTSIDE}"))
    );

    if netavark.exists() {
        let theirs = Lab::new("podman-proto-netavark");
        let ns2 = theirs.netns_dir().join("c1");
        rete::netns::create(&ns2).unwrap();
        let mut cmd = Command::new(netavark);
        cmd.args(["--config"])
            .arg(theirs.dir.join("aardvark"))
            .args(["--rootless=false", "setup"])
            .arg(&ns2);
        enter_on_exec(&mut cmd, &theirs.host);
        let (their_out, ok) = run_with_input(cmd, &req);
        assert!(ok, "netavark 1.4: {their_out}");
        assert_eq!(without_macs(rete_out.clone()), without_macs(their_out));
        let mut cmd = Command::new(netavark);
        cmd.args(["--config"])
            .arg(theirs.dir.join("aardvark"))
            .args(["--rootless=false", "teardown"])
            .arg(&ns2);
        enter_on_exec(&mut cmd, &theirs.host);
        run_with_input(cmd, &req);
    } else {
        eprintln!("netavark 1.4 is not installed: compared with the recorded shape only");
    }
    assert_eq!(
        rete_out["beta"]["interfaces"]["eth1"]["subnets"],
        json!([{"gateway": "10.62.0.1", "ipnet": "10.62.0.2/24"}])
    );

    // Teardown is idempotent, and leaves nothing.
    for _ in 0..2 {
        let (out, ok) = as_netavark(&ours, &["teardown", ns.to_str().unwrap()], &req);
        assert!(ok, "{out}");
        assert_eq!(out, Value::Null);
    }
    assert_eq!(ours.rete_ok(&["ls", "-q"]).trim(), "");
    assert_eq!(ours.rete_ok(&["network", "ls", "-q"]).trim(), "");
    assert!(!ours
        .host_links()
        .iter()
        .any(|l| l.starts_with("rete-") || l.starts_with("podman")));
}

#[test]
fn networks_as_a_list_and_input_from_a_file() {
    require_root!();
    let lab = Lab::new("podman-proto-list");
    let ns = lab.netns_dir().join("c2");
    rete::netns::create(&ns).unwrap();
    let mut req = two_network_request("c2");
    let map = req["networks"].as_object().unwrap().clone();
    req["networks"] = Value::Array(
        map.into_iter()
            .rev()
            .map(|(name, mut v)| {
                v["name"] = json!(name);
                v
            })
            .collect(),
    );
    // A field from a future Podman is ignored.
    req["something_new"] = json!({"x": 1});
    // Several protocols in one mapping (netavark 1.4 itself fails on this).
    req["port_mappings"] = json!([
        {"host_ip": "", "container_port": 80, "host_port": 8080, "range": 1, "protocol": "tcp,udp"}
    ]);
    let file = lab.dir.join("request.json");
    std::fs::write(&file, req.to_string()).unwrap();
    let (out, ok) = as_netavark(
        &lab,
        &[
            "--file",
            file.to_str().unwrap(),
            "setup",
            ns.to_str().unwrap(),
        ],
        "",
    );
    assert!(ok, "{out}");
    assert!(out["alpha"]["interfaces"]["eth0"].is_object(), "{out}");
    assert!(out["beta"]["interfaces"]["eth1"].is_object(), "{out}");
    // The first listed network (beta here) carries the ports.
    let c = lab.inspect("c2");
    assert_eq!(c["endpoints"][0]["network"], "beta");
    assert_eq!(
        tcp_get(&lab.outside, uplink(), 8080),
        None,
        "nothing listens yet"
    );
    let _srv = Server::tcp(&ns, ip("10.62.0.2"), 80, "via beta", 1);
    assert_eq!(
        tcp_get(&lab.outside, uplink(), 8080),
        Some(format!("via beta {UPLINK_OUTSIDE}"))
    );
    let (out, ok) = as_netavark(
        &lab,
        &[
            "-f",
            file.to_str().unwrap(),
            "teardown",
            ns.to_str().unwrap(),
        ],
        "",
    );
    assert!(ok, "{out}");
    assert_eq!(lab.rete_ok(&["ls", "-q"]).trim(), "");
}

#[test]
fn errors_are_json_on_stdout_with_status_1() {
    require_root!();
    let lab = Lab::new("podman-proto-errors");
    let ns = lab.netns_dir().join("c3");
    rete::netns::create(&ns).unwrap();
    let nsarg = ns.to_str().unwrap();
    let error = |args: &[&str], input: &str| {
        let (out, ok) = as_netavark(&lab, args, input);
        assert!(!ok, "{args:?} should fail: {out}");
        out["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{out}"))
            .to_string()
    };
    assert!(error(&["setup", nsarg], "{not json").contains("invalid request JSON"));
    assert!(error(
        &["setup", "/nonexistent/ns"],
        &two_network_request("c3").to_string()
    )
    .contains("invalid namespace path"));
    let mut req = two_network_request("c3");
    req["network_info"]["beta"]["driver"] = json!("ipvlan");
    assert!(error(&["setup", nsarg], &req.to_string()).contains("ipvlan driver"));
    // All or nothing: alpha was fine, yet nothing is left of it.
    assert_eq!(lab.rete_ok(&["ls", "-q"]).trim(), "");
    assert_eq!(lab.rete_ok(&["network", "ls", "-q"]).trim(), "");
    let mut req = two_network_request("c3");
    req["networks"]["beta"]["static_ips"] = json!(["10.99.0.2"]);
    let e = error(&["setup", nsarg], &req.to_string());
    assert!(e.contains("10.99.0.2"), "{e}");
    assert_eq!(lab.rete_ok(&["ls", "-q"]).trim(), "");
    assert_eq!(lab.rete_ok(&["network", "ls", "-q"]).trim(), "");
    assert!(error(&["--rootless=maybe", "setup", nsarg], "{}").contains("--rootless"));
    assert!(error(&["frobnicate"], "").contains("frobnicate"));
}

#[test]
fn version_create_and_update() {
    let dir = std::env::temp_dir().join(format!("rete-podman-version-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("netavark");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rete"), &link).unwrap();
    let call = |args: &[&str], input: &str| {
        run_with_input(
            {
                let mut c = Command::new(&link);
                c.args(args);
                c
            },
            input,
        )
    };
    let (v, ok) = call(&["version"], "");
    assert!(ok);
    for key in ["version", "commit", "build_time", "target"] {
        assert!(v[key].is_string(), "{key} in {v}");
    }
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    // Newer Podman's `network create`: the network comes back completed.
    let (n, ok) = call(
        &["create"],
        &json!({
            "network": {"name": "web", "driver": "bridge", "dns_enabled": true, "ipv6_enabled": true,
                        "labels": {"team": "a"}},
            "used": {"interfaces": ["podman0"], "names": {"podman": "x"}, "subnets": ["10.88.0.0/16"]},
            "options": {"subnet_pools": [{"base": "10.89.0.0/16", "size": 24}],
                        "default_interface_name": "podman", "check_used_subnets": true}
        })
        .to_string(),
    );
    assert!(ok, "{n}");
    assert_eq!(n["name"], "web");
    assert_eq!(n["network_interface"], "podman1");
    assert_eq!(n["subnets"][0]["subnet"], "10.89.0.0/24");
    assert_eq!(n["subnets"][0]["gateway"], "10.89.0.1");
    assert!(n["subnets"][1]["subnet"]
        .as_str()
        .unwrap()
        .starts_with("fd"));
    assert_eq!(n["labels"]["team"], "a");
    assert_eq!(n["id"].as_str().unwrap().len(), 64);
    assert!(n["created"].is_string());
    let (e, ok) = call(
        &["create"],
        r#"{"network":{"name":"x","driver":"macvlan"}}"#,
    );
    assert!(!ok);
    assert!(e["error"].as_str().unwrap().contains("macvlan"));

    let (out, ok) = call(&["update", "--network-dns-servers", "1.1.1.1", "web"], "");
    assert!(ok, "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Podman's static routes (`podman network create --route`, netavark 1.5's
/// `routes`) and the `metric` and `no_default_route` options reach the
/// container; a route the container cannot use is refused as netavark's
/// JSON error, with nothing left behind.
#[test]
fn routes_metric_and_no_default_route() {
    require_root!();
    let lab = Lab::new("podman-proto-routes");
    let ns = lab.netns_dir().join("c3");
    rete::netns::create(&ns).unwrap();
    let mut req = two_network_request("c3");
    req["network_info"]["alpha"]["options"] = json!({"metric": "150"});
    req["network_info"]["alpha"]["routes"] =
        json!([{"destination": "10.90.0.0/16", "gateway": "10.61.0.9", "metric": 20}]);
    req["network_info"]["beta"]["options"] = json!({"no_default_route": "true"});
    req["network_info"]["beta"]["routes"] =
        json!([{"destination": "10.91.0.0/16", "gateway": "10.62.0.9"}]);
    let (out, ok) = as_netavark(&lab, &["setup", ns.to_str().unwrap()], &req.to_string());
    assert!(ok, "{out}");
    let routes = sh_in(&ns, "ip -4 route");
    let defaults: Vec<&str> = routes
        .lines()
        .filter(|l| l.starts_with("default"))
        .collect();
    assert_eq!(defaults.len(), 1, "{routes}");
    assert!(
        defaults[0].contains("via 10.61.0.1 dev eth0") && defaults[0].contains("metric 150"),
        "{routes}"
    );
    assert!(
        routes.contains("10.90.0.0/16 via 10.61.0.9 dev eth0") && routes.contains("metric 20"),
        "{routes}"
    );
    assert!(
        routes.contains("10.91.0.0/16 via 10.62.0.9 dev eth1"),
        "{routes}"
    );
    let (out, ok) = as_netavark(&lab, &["teardown", ns.to_str().unwrap()], &req.to_string());
    assert!(ok, "{out}");

    let mut bad = two_network_request("c4");
    bad["network_info"]["beta"]["routes"] =
        json!([{"destination": "10.92.0.0/16", "gateway": "10.63.0.9"}]);
    let ns = lab.netns_dir().join("c4");
    rete::netns::create(&ns).unwrap();
    let (out, ok) = as_netavark(&lab, &["setup", ns.to_str().unwrap()], &bad.to_string());
    assert!(!ok);
    let msg = out["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("gateway 10.63.0.9 is not on a subnet"),
        "{out}"
    );
    assert_eq!(lab.rete_ok(&["ls", "-q"]).trim(), "");
    assert_eq!(lab.rete_ok(&["network", "ls", "-q"]).trim(), "");
    assert_eq!(
        sh_in(&ns, "ip -o link show | grep -v ' lo:' || true").trim(),
        ""
    );
}
