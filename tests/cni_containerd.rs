//! rete as a CNI plugin under the real containerd (Debian's 1.6): a private
//! containerd daemon (own config, root, state and socket in the lab dir)
//! runs inside the lab's host namespace, and `ctr run --cni` sets up each
//! container's network through rete. Nothing of the machine's root network
//! namespace is touched.
//!
//! How ctr 1.6 is made to use rete without touching the machine's CNI dirs:
//! its go-cni is built with the defaults (`gocni.WithDefaultConf`: the first
//! conflist in /etc/cni/net.d, plugins from /opt/cni/bin, cache in
//! /var/lib/cni) and has no flag or variable to change them. So each
//! `ctr run --cni` runs in a private mount namespace (`unshare --mount`)
//! where the lab's conflist dir, plugin dir (rete installed with
//! `rete cni install`) and cache dir are bind-mounted over those three.
//!
//! Lifecycle as ctr 1.6 does it: a detached `ctr run --cni -d` never runs
//! CNI DEL (neither `ctr task kill` nor `ctr container rm` do; 1.6 has no
//! CNI metadata on containers), so the containers run as foreground
//! `ctr run --cni --rm`, whose deferred cleanup runs CNI DEL when the task
//! exits after `ctr task kill`, and then removes the container.
//!
//! Ports: `ctr run --cni` passes no capability arguments (no portMappings),
//! so the published port here comes from a static `runtimeConfig` in the
//! conflist that ctr uses for the web container (libcni passes a plugin's
//! configuration through unchanged when the runtime injects nothing). The
//! client container is started with a conflist without it.

mod common;
mod realclients;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use realclients::*;
use serde_json::json;

const IMAGE: &str = "localhost/rete-busybox:latest";
const SUBNET: &str = "10.89.7.0/24";

/// The machine's dirs ctr's go-cni uses; hidden per ctr process by binds.
const CNI_CONF_DIR: &str = "/etc/cni/net.d";
const CNI_BIN_DIR: &str = "/opt/cni/bin";
const CNI_CACHE_DIR: &str = "/var/lib/cni";

struct Containerd {
    dir: PathBuf,
    ns: String,
    daemon: Option<Child>,
    /// Foreground `ctr run --cni --rm` processes, by container id.
    runs: Vec<(String, Child)>,
    /// Mount points this test had to create (removed again if empty).
    created: Vec<PathBuf>,
    /// Whether /run/containerd existed before (the shims put sockets there).
    had_run_containerd: bool,
    lab: Lab,
}

impl Containerd {
    fn sock(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// `ctr --address SOCK --namespace NS ARGS...`, bounded, in the lab host.
    fn ctr(&self, secs: u32, args: &[&str]) -> Command {
        let sock = self.sock();
        let mut all = vec!["--address", sock.to_str().unwrap(), "--namespace", &self.ns];
        all.extend_from_slice(args);
        bounded(&self.lab.host, secs, "ctr", &all)
    }

    fn ctr_ok(&self, secs: u32, args: &[&str]) -> String {
        let (ok, out, err) = output(self.ctr(secs, args));
        assert!(ok, "ctr {args:?} failed: {out}{err}");
        out
    }

    /// The name CNI (and so rete) knows a container by: go-cni's FullID.
    fn full_id(&self, id: &str) -> String {
        format!("{}-{id}", self.ns)
    }

    /// Starts containerd in the lab host namespace; Err if it does not
    /// answer within 20 s.
    fn start(lab: Lab) -> Result<Containerd, String> {
        let dir = lab.dir.join("containerd");
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        // Bounded: should the test process die, the daemon still ends.
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "600", "containerd", "--config"])
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        enter_on_exec(&mut cmd, &lab.host);
        let daemon = cmd.spawn().expect("spawn containerd");
        let c = Containerd {
            dir,
            ns: format!("rete{}", std::process::id()),
            daemon: Some(daemon),
            runs: Vec::new(),
            created: Vec::new(),
            had_run_containerd: Path::new("/run/containerd").exists(),
            lab,
        };
        if wait_for(20, || output(c.ctr(5, &["version"])).0) {
            Ok(c)
        } else {
            let log = std::fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            Err(format!("containerd did not start: {}", tail.join(" / ")))
        }
    }

    /// Makes sure the dirs go-cni reads exist as mount points.
    fn mount_points(&mut self) {
        for p in [CNI_CONF_DIR, CNI_BIN_DIR] {
            let p = Path::new(p);
            let mut missing = Vec::new();
            let mut cur = Some(p);
            while let Some(c) = cur {
                if c.exists() {
                    break;
                }
                missing.push(c.to_path_buf());
                cur = c.parent();
            }
            if !missing.is_empty() {
                std::fs::create_dir_all(p).unwrap();
                self.created.extend(missing);
            }
        }
        std::fs::create_dir_all(self.dir.join("cni-cache")).unwrap();
    }

    /// `ctr run --cni --rm IMAGE ID CMD...` in the foreground (as a child
    /// of the test), with `conf` as the only conflist ctr sees. Waits until
    /// rete knows the container; panics with ctr's output if it failed.
    fn run(&mut self, id: &str, conf: &serde_json::Value, cmd: &[&str]) {
        let confdir = self.dir.join(format!("net.d-{id}"));
        std::fs::create_dir_all(&confdir).unwrap();
        write_atomic(
            &confdir.join("00-retenet.conflist"),
            &serde_json::to_string_pretty(conf).unwrap(),
        );
        let script = format!(
            "set -e; mount --bind \"$1\" {CNI_CONF_DIR}; mount --bind \"$2\" {CNI_BIN_DIR}; \
             if [ -d {CNI_CACHE_DIR} ]; then mount --bind \"$3\" {CNI_CACHE_DIR}; fi; \
             shift 3; exec \"$@\""
        );
        let sock = self.sock();
        let runc_root = self.dir.join("runc");
        let mut args: Vec<String> = [
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ]
        .map(str::to_string)
        .to_vec();
        args.push(confdir.display().to_string());
        args.push(self.lab.dir.join("cni-bin").display().to_string());
        args.push(self.dir.join("cni-cache").display().to_string());
        args.extend(
            [
                "ctr",
                "--address",
                sock.to_str().unwrap(),
                "--namespace",
                &self.ns,
                "run",
                "--cni",
                "--rm",
                "--null-io",
                "--snapshotter",
                "native",
                "--runc-root",
                runc_root.to_str().unwrap(),
                IMAGE,
                id,
            ]
            .map(str::to_string),
        );
        args.extend(cmd.iter().map(|s| s.to_string()));
        let log = std::fs::File::create(self.dir.join(format!("ctr-run-{id}.log"))).unwrap();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = bounded(&self.lab.host, 240, "unshare", &refs);
        c.stdout(log.try_clone().unwrap()).stderr(log);
        let child = c.spawn().expect("spawn ctr run");
        self.runs.push((id.to_string(), child));
        let full = self.full_id(id);
        let lab = &self.lab;
        let (_, child) = self.runs.last_mut().unwrap();
        let up = wait_for(30, || {
            if child.try_wait().ok().flatten().is_some() {
                return true;
            }
            rete_names(lab).contains(&full)
        });
        let exited = child.try_wait().ok().flatten();
        let log =
            std::fs::read_to_string(self.dir.join(format!("ctr-run-{id}.log"))).unwrap_or_default();
        assert!(
            up && exited.is_none(),
            "ctr run --cni {id} did not come up (exit {exited:?}): {log}"
        );
    }

    /// `ctr task exec` in container `id`; (success, stdout+stderr).
    fn exec(&self, id: &str, cmd: &[&str]) -> (bool, String) {
        let exec_id = format!(
            "x{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let fifo = self.dir.join("fifo");
        let mut args = vec![
            "task",
            "exec",
            "--fifo-dir",
            fifo.to_str().unwrap(),
            "--exec-id",
            &exec_id,
            id,
        ];
        args.extend_from_slice(cmd);
        let (ok, out, err) = output(self.ctr(30, &args));
        (ok, out + &err)
    }

    /// Kills container `id`'s task and waits (30 s) for its foreground
    /// `ctr run` to finish: CNI DEL, task and container removal.
    fn stop(&mut self, id: &str) -> bool {
        let _ = output(self.ctr(30, &["task", "kill", "--signal", "SIGKILL", id]));
        let Some(pos) = self.runs.iter().position(|(i, _)| i == id) else {
            return true;
        };
        let (_, mut child) = self.runs.remove(pos);
        let done = wait_for(30, || child.try_wait().ok().flatten().is_some());
        if !done {
            let _ = child.kill();
            let _ = child.wait();
        }
        done
    }

    fn teardown(&mut self) {
        if self.daemon.is_none() {
            return;
        }
        // Containers first (their ctr runs do CNI DEL), then the daemon.
        let ids: Vec<String> = self.runs.iter().map(|(i, _)| i.clone()).collect();
        for id in ids {
            self.stop(&id);
        }
        let (_, list, _) = output(self.ctr(20, &["container", "ls", "-q"]));
        for id in list.split_whitespace() {
            let _ = output(self.ctr(20, &["task", "kill", "--signal", "SIGKILL", id]));
            let _ = output(self.ctr(20, &["task", "rm", "-f", id]));
            let _ = output(self.ctr(20, &["container", "rm", id]));
        }
        if let Some(mut d) = self.daemon.take() {
            // SIGTERM to `timeout` passes it on to containerd.
            // SAFETY: signals our own child by its pid.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            if !wait_for(15, || d.try_wait().ok().flatten().is_some()) {
                let _ = d.kill();
            }
            let _ = d.wait();
        }
        unmount_under(&self.lab.dir);
        // Deepest first: `created` lists each path before its parents.
        for p in &self.created {
            let _ = std::fs::remove_dir(p);
        }
        if !self.had_run_containerd {
            for p in [
                "/run/containerd/s",
                "/run/containerd/fifo",
                "/run/containerd",
            ] {
                let _ = std::fs::remove_dir(p);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn ctr_run_cni_attaches_containers_through_rete() {
    require_root!();
    if let Err(why) = ensure_packages(&[
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("containerd-shim-runc-v2", "containerd"),
        ("runc", "runc"),
        ("busybox", "busybox-static"),
        ("unshare", "util-linux"),
    ]) {
        eprintln!("skipped: {why}");
        return;
    }
    let lab = Lab::new("ctrd");
    install_rete(&lab.dir.join("cni-bin"));
    let root = busybox_rootfs(&lab.dir);
    let archive = docker_archive(&root, &lab.dir, IMAGE);

    let mut c = match Containerd::start(lab) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    c.mount_points();
    c.ctr_ok(
        60,
        &[
            "image",
            "import",
            "--snapshotter",
            "native",
            archive.to_str().unwrap(),
        ],
    );
    // Can containers run here at all (cgroups, runc)? Without CNI first.
    let runc_root = c.dir.join("runc");
    let (ok, out, err) = output(c.ctr(
        60,
        &[
            "run",
            "--rm",
            "--snapshotter",
            "native",
            "--runc-root",
            runc_root.to_str().unwrap(),
            IMAGE,
            "probe",
            "true",
        ],
    ));
    if !ok {
        eprintln!("skipped: containerd cannot run containers here: {out}{err}");
        return;
    }

    // c1: a client on the plain conflist; c2: a web server, on the conflist
    // with a static port mapping (host 8080 -> 80).
    let plain = conflist(&c.lab, "rete-ctr0", SUBNET, json!({}));
    let published = conflist(
        &c.lab,
        "rete-ctr0",
        SUBNET,
        json!({ "runtimeConfig": { "portMappings": [
            { "hostPort": 8080, "containerPort": 80, "protocol": "tcp" }
        ] } }),
    );
    c.run("c1", &plain, &["sleep", "600"]);
    c.run("c2", &published, &["httpd", "-f", "-p", "80", "-h", "/www"]);
    let (id1, id2) = (c.full_id("c1"), c.full_id("c2"));

    // Each container has the address rete gave it, from rete's subnet.
    let net: ipnet::IpNet = SUBNET.parse().unwrap();
    let a1 = c.lab.addr_of(&id1, "retenet", false);
    let a2 = c.lab.addr_of(&id2, "retenet", false);
    assert!(net.contains(&a1) && net.contains(&a2) && a1 != a2);
    for (id, a) in [("c1", a1), ("c2", a2)] {
        let (ok, out) = c.exec(id, &["ip", "-4", "addr", "show", "dev", "eth0"]);
        assert!(ok && shows_inet(&out, a), "{id} should have {a}: {out}");
    }
    let ls = c.lab.rete_ok(&["ls"]);
    assert!(
        ls.contains("retenet") && ls.contains("8080->80/tcp"),
        "{ls}"
    );

    // One container reaches the other: ICMP and HTTP.
    let (ok, out) = c.exec("c1", &["ping", "-c", "1", "-W", "2", &a2.to_string()]);
    assert!(ok, "c1 pings c2: {out}");
    let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {a2} 80");
    let mut page = String::new();
    let served = wait_for(10, || {
        page = c.exec("c1", &["sh", "-c", &get]).1;
        page.contains(PAGE)
    });
    assert!(served, "c1 gets c2's page: {page}");

    // Out: c1 reaches the outside namespace, masqueraded behind the host.
    let _srv = Server::tcp(&c.lab.outside, ip(UPLINK_OUTSIDE), 7000, "outside", 1);
    let (ok, out) = c.exec(
        "c1",
        &[
            "sh",
            "-c",
            &format!("nc -w 3 {UPLINK_OUTSIDE} 7000 </dev/null"),
        ],
    );
    assert!(
        ok && out.contains(&format!("outside {UPLINK_HOST}")),
        "c1 reaches the outside as the host: {out}"
    );

    // In: the published port answers on the host's uplink address, and the
    // container is reachable by routing through the host.
    let r = page_from(&c.lab.outside, ip(UPLINK_HOST), 8080, 10);
    assert!(
        r.as_deref().is_some_and(|r| r.contains(PAGE)),
        "{UPLINK_HOST}:8080 from outside: {r:?}"
    );
    c.lab
        .sh_outside(&format!("ip route add {SUBNET} via {UPLINK_HOST}"));
    let r = page_from(&c.lab.outside, a2, 80, 10);
    assert!(
        r.as_deref().is_some_and(|r| r.contains(PAGE)),
        "{a2}:80 routed from outside: {r:?}"
    );

    // Kill the tasks: each foreground ctr run does CNI DEL and removes its
    // container; rete forgets both and their veths go.
    assert!(c.stop("c1"), "ctr run c1 ended after task kill");
    assert!(c.stop("c2"), "ctr run c2 ended after task kill");
    let (_, left, _) = output(c.ctr(20, &["container", "ls", "-q"]));
    assert_eq!(left.trim(), "", "ctr --rm removed the containers");
    assert_eq!(rete_names(&c.lab), Vec::<String>::new(), "rete ls is empty");
    assert_eq!(
        rete_links(&c.lab),
        vec!["rete-ctr0".to_string()],
        "only the network's bridge is left"
    );
    assert!(
        http_get(&c.lab.outside, ip(UPLINK_HOST), 8080).is_none(),
        "the port is no longer published"
    );
    // The network itself is rete's to remove; then nothing of rete is left.
    c.lab.rete_ok(&["network", "rm", "retenet"]);
    assert_eq!(rete_links(&c.lab), Vec::<String>::new());
}
