//! rete as a CNI plugin under the real Podman (Debian's 4.3) with its CNI
//! network backend: Podman runs inside the lab's host namespace with a
//! private containers.conf (CONTAINERS_CONF: `network_backend = "cni"`,
//! `cni_plugin_dirs` = the lab's rete install + /usr/lib/cni,
//! `network_config_dir` = a lab dir holding the rete conflist), private
//! storage (CONTAINERS_STORAGE_CONF: vfs, graphroot and runroot in the lab)
//! and an image imported from busybox-static. Podman passes portMappings to
//! CNI, so `-p` is rete's port publishing.
//!
//! Limits: containers get `default_ulimits` nofile 1024, nproc 4096 from the
//! private containers.conf. Podman's own defaults (nofile 1048576, nproc
//! 32768) and `--ulimit host` (which gives nofile 1048576 in 4.3) fail in
//! runc here ("error setting rlimit type 7/6: operation not permitted"):
//! this machine's sandbox caps the hard limits.
//!
//! Podman pins each container's namespace in the machine's /run/netns
//! (netns-<uuid>); the test notes them and checks they are gone after
//! `podman rm`, and unpins any that a failed run leaves.

mod common;
mod realclients;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use realclients::*;
use serde_json::json;

const IMAGE: &str = "localhost/rete-busybox:latest";
const SUBNET: &str = "10.89.8.0/24";

struct Podman {
    /// Namespaces Podman pinned for this test's containers.
    pinned: Vec<PathBuf>,
    lab: Lab,
}

impl Podman {
    fn new(lab: Lab) -> Podman {
        let d = lab.dir.clone();
        install_rete(&d.join("cni-bin"));
        let netdir = d.join("cni-conf");
        std::fs::create_dir_all(&netdir).unwrap();
        write_atomic(
            &netdir.join("retenet.conflist"),
            &serde_json::to_string_pretty(&conflist(&lab, "rete-pod0", SUBNET, json!({}))).unwrap(),
        );
        std::fs::write(
            d.join("containers.conf"),
            format!(
                r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
log_driver = "k8s-file"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{d}/cni-bin", "/usr/lib/cni"]
network_config_dir = "{d}/cni-conf"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/podman-events.log"
lock_type = "file"
tmp_dir = "{d}/podman-tmp"
static_dir = "{d}/podman-static"
volume_path = "{d}/podman-volumes"
"#,
                d = d.display()
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
        Podman {
            pinned: Vec::new(),
            lab,
        }
    }

    /// `podman ARGS...`, bounded, in the lab host, with the private config.
    fn cmd(&self, secs: u32, args: &[&str]) -> Command {
        let d = &self.lab.dir;
        let mut cmd = bounded(&self.lab.host, secs, "podman", args);
        cmd.env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", "/dev/null");
        cmd
    }

    /// (success, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        output(self.cmd(90, args))
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "podman {args:?} failed: {out}{err}");
        out
    }

    fn id_of(&self, name: &str) -> String {
        self.ok(&["inspect", "-f", "{{.Id}}", name])
            .trim()
            .to_string()
    }

    /// Notes the namespace Podman pinned for container `name`.
    fn note_netns(&mut self, name: &str) -> PathBuf {
        let key = self.ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name]);
        let p = PathBuf::from(key.trim());
        assert!(p.exists(), "{name}'s namespace {} is pinned", p.display());
        self.pinned.push(p.clone());
        p
    }

    fn exec(&self, name: &str, cmd: &[&str]) -> (bool, String) {
        let mut args = vec!["exec", name];
        args.extend_from_slice(cmd);
        let (ok, out, err) = self.run(&args);
        (ok, out + &err)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
        for p in &self.pinned {
            if p.exists() && p.starts_with("/run/netns") {
                let _ = rete::netns::remove(p);
            }
        }
        unmount_under(&self.lab.dir);
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn podman_cni_backend_runs_containers_on_rete() {
    require_root!();
    if let Err(why) = ensure_packages(&[
        ("podman", "podman"),
        ("conmon", "conmon"),
        ("runc", "runc"),
        ("busybox", "busybox-static"),
    ]) {
        eprintln!("skipped: {why}");
        return;
    }
    let mut p = Podman::new(Lab::new("podcni"));
    let root = busybox_rootfs(&p.lab.dir);
    let layer = layer_tar(&root, &p.lab.dir.join("rootfs.tar"));
    p.ok(&["import", layer.to_str().unwrap(), IMAGE]);
    // Can containers run here at all (cgroups, runc, limits)? Without a
    // network first.
    let (ok, out, err) = p.run(&["run", "--rm", "--network", "none", IMAGE, "true"]);
    if !ok {
        eprintln!("skipped: podman cannot run containers here: {out}{err}");
        return;
    }
    let nets = p.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(
        nets.lines().any(|l| l == "retenet rete"),
        "podman lists the rete conflist: {nets}"
    );

    p.ok(&[
        "run",
        "-d",
        "--name",
        "p1",
        "--network",
        "retenet",
        IMAGE,
        "sleep",
        "600",
    ]);
    p.ok(&[
        "run",
        "-d",
        "--name",
        "p2",
        "--network",
        "retenet",
        "-p",
        "8080:80",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let ns1 = p.note_netns("p1");
    let ns2 = p.note_netns("p2");
    assert_ne!(ns1, ns2);
    let (id1, id2) = (p.id_of("p1"), p.id_of("p2"));

    // rete knows both by Podman's container id; each has rete's address,
    // and Podman reports the same.
    let net: ipnet::IpNet = SUBNET.parse().unwrap();
    let a1 = p.lab.addr_of(&id1, "retenet", false);
    let a2 = p.lab.addr_of(&id2, "retenet", false);
    assert!(net.contains(&a1) && net.contains(&a2) && a1 != a2);
    for (name, a) in [("p1", a1), ("p2", a2)] {
        let (ok, out) = p.exec(name, &["ip", "-4", "addr", "show", "dev", "eth0"]);
        assert!(ok && shows_inet(&out, a), "{name} should have {a}: {out}");
        let seen = p.ok(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.retenet.IPAddress}}",
            name,
        ]);
        assert_eq!(seen.trim(), a.to_string(), "podman inspect {name}");
    }
    let ports = p.lab.rete_ok(&["port", &id2]);
    assert!(ports.contains("8080"), "rete port: {ports}");

    // One container reaches the other: ICMP and HTTP.
    let (ok, out) = p.exec("p1", &["ping", "-c", "1", "-W", "2", &a2.to_string()]);
    assert!(ok, "p1 pings p2: {out}");
    let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {a2} 80");
    let mut page = String::new();
    let served = wait_for(10, || {
        page = p.exec("p1", &["sh", "-c", &get]).1;
        page.contains(PAGE)
    });
    assert!(served, "p1 gets p2's page: {page}");

    // Out: p1 reaches the outside namespace, masqueraded behind the host.
    let _srv = Server::tcp(&p.lab.outside, ip(UPLINK_OUTSIDE), 7000, "outside", 1);
    let (ok, out) = p.exec(
        "p1",
        &[
            "sh",
            "-c",
            &format!("nc -w 3 {UPLINK_OUTSIDE} 7000 </dev/null"),
        ],
    );
    assert!(
        ok && out.contains(&format!("outside {UPLINK_HOST}")),
        "p1 reaches the outside as the host: {out}"
    );

    // In: -p 8080:80 answers on the host's uplink address.
    let r = page_from(&p.lab.outside, ip(UPLINK_HOST), 8080, 10);
    assert!(
        r.as_deref().is_some_and(|r| r.contains(PAGE)),
        "{UPLINK_HOST}:8080 from outside: {r:?}"
    );

    // podman rm: CNI DEL for each; rete forgets them, their veths and the
    // port go, and Podman unpins their namespaces.
    p.ok(&["rm", "-f", "-t", "0", "p1", "p2"]);
    assert_eq!(rete_names(&p.lab), Vec::<String>::new(), "rete ls is empty");
    assert_eq!(
        rete_links(&p.lab),
        vec!["rete-pod0".to_string()],
        "only the network's bridge is left"
    );
    assert!(
        http_get(&p.lab.outside, ip(UPLINK_HOST), 8080).is_none(),
        "the port is no longer published"
    );
    let gone = wait_for(10, || p.pinned.iter().all(|n| !Path::new(n).exists()));
    assert!(gone, "podman unpinned {:?}", p.pinned);
    p.lab.rete_ok(&["network", "rm", "retenet"]);
    assert_eq!(rete_links(&p.lab), Vec::<String>::new());
}
