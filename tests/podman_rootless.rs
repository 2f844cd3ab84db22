//! Rootless Podman on rete: Podman run by an unprivileged user calls rete
//! (as `netavark --rootless=true`) inside its rootless network namespace,
//! where rete keeps a store of the user's own under Podman's network
//! directory. The user is a uid with no passwd entry and no subordinate ids
//! (Podman then maps just that one uid), so the machine's user database is
//! not touched.
//!
//! slirp4netns needs /dev/net/tun, which this machine kind makes root-only
//! (mode 0600): each Podman command runs in a private mount namespace where
//! a tun node of the lab's, open to the user, is bound over it. Nothing of
//! the machine's /dev changes.

mod common;
mod realclients;

use std::ffi::CString;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::podman_cli::{containers_conf, PodmanCli};
use common::*;
use realclients::{busybox_rootfs, layer_tar, wait_for};

/// Skips the test unless root, Podman, slirp4netns and busybox are there.
macro_rules! require_rootless_podman {
    () => {
        require_root!();
        for bin in [
            "/usr/bin/podman",
            "/usr/bin/slirp4netns",
            "/usr/lib/podman/rootlessport",
            "/bin/busybox",
        ] {
            if !Path::new(bin).exists() {
                eprintln!(
                    "skipped: needs {bin} (apt-get install podman slirp4netns busybox-static)"
                );
                return;
            }
        }
        if !Path::new("/dev/net/tun").exists() {
            eprintln!("skipped: the kernel has no /dev/net/tun, which slirp4netns needs");
            return;
        }
    };
}

/// A lab whose Podman runs as an unprivileged uid, with rete as netavark.
struct Rootless {
    lab: Lab,
    uid: u32,
    home: PathBuf,
    xdg: PathBuf,
}

impl Rootless {
    fn new(name: &str) -> Rootless {
        let lab = Lab::new(&format!("rootless-{name}"));
        let uid = free_uid();
        let d = lab.dir.clone();
        let home = d.join("home");
        let xdg = d.join("xdg");
        let bin = d.join("bin");
        for dir in [&home, &xdg, &bin] {
            std::fs::create_dir_all(dir).unwrap();
        }
        // The user's copy of rete, where the user can run it; Podman calls
        // it by the name `netavark`.
        std::fs::copy(env!("CARGO_BIN_EXE_rete"), bin.join("rete")).unwrap();
        std::os::unix::fs::symlink("rete", bin.join("netavark")).unwrap();
        make_tun(&d.join("tun"));
        std::fs::write(home.join("containers.conf"), containers_conf(&bin, "")).unwrap();
        std::fs::write(
            home.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{h}/graph\"\nrunroot = \"{x}/containers\"\n",
                h = home.display(),
                x = xdg.display()
            ),
        )
        .unwrap();
        let root = busybox_rootfs(&d);
        layer_tar(&root, &home.join("busybox.tar"));
        chown_tree(&home, uid);
        chown_tree(&xdg, uid);
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
        let r = Rootless {
            lab,
            uid,
            home,
            xdg,
        };
        let tar = r.home.join("busybox.tar");
        r.ok(&["import", tar.to_str().unwrap(), "localhost/busybox:latest"]);
        r
    }

    /// Where rete keeps the user's store: under Podman's network directory
    /// (its runroot's `networks`).
    fn store(&self) -> PathBuf {
        self.xdg.join("containers/networks/rete")
    }

    /// Container names in the user's rete store, read as the user (so no
    /// file of the store becomes root's).
    fn rete_containers(&self) -> Vec<String> {
        let uid = self.uid.to_string();
        let out = Command::new("setpriv")
            .args(["--reuid", &uid, "--regid", &uid, "--clear-groups"])
            .arg(self.lab.dir.join("bin/rete"))
            .args(["ls", "-q"])
            .env("RETE_STATE_DIR", self.store().join("state"))
            .env("RETE_RUN_DIR", self.store().join("run"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rete ls: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl PodmanCli for Rootless {
    /// `podman ARGS` as the user, in the lab's host namespace, with the
    /// lab's tun over /dev/net/tun in a private mount namespace.
    fn cmd(&self, args: &[&str]) -> Command {
        let uid = self.uid.to_string();
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /dev/net/tun && exec "$@""#)
            .arg(self.lab.dir.join("tun"))
            .args([
                "setpriv",
                "--reuid",
                &uid,
                "--regid",
                &uid,
                "--clear-groups",
            ])
            .args(["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
            .arg(format!("HOME={}", self.home.display()))
            .arg(format!("XDG_RUNTIME_DIR={}", self.xdg.display()))
            .arg(format!(
                "CONTAINERS_CONF={}",
                self.home.join("containers.conf").display()
            ))
            .arg(format!(
                "CONTAINERS_STORAGE_CONF={}",
                self.home.join("storage.conf").display()
            ))
            .arg("CONTAINERS_REGISTRIES_CONF=/dev/null")
            .args(["timeout", "-k", "5", "120", "podman"])
            .args(args)
            .stdin(Stdio::null());
        enter_on_exec(&mut cmd, &self.lab.host);
        cmd
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af", "-t", "0"]);
        // The user's pause process, slirp4netns, conmon, rete's resolver:
        // everything the uid still runs goes.
        for _ in 0..20 {
            let left = processes_of(self.uid);
            if left.is_empty() {
                break;
            }
            for pid in left {
                // SAFETY: plain kill(2) on a process of the lab's own uid.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// A uid with no passwd entry that runs nothing.
fn free_uid() -> u32 {
    // /etc/passwd read directly: this test is linked statically, like rete,
    // and a static getpwuid loads nsswitch.conf's other modules (crashing).
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let known: std::collections::HashSet<u32> = passwd
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    (0..1000)
        .map(|i| 61_000 + (std::process::id() % 1000) * 3 + i)
        .find(|uid| !known.contains(uid) && processes_of(*uid).is_empty())
        .expect("a free uid")
}

fn processes_of(uid: u32) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            (e.metadata().ok()?.uid() == uid).then_some(pid)
        })
        .collect()
}

/// A character device node for tun (10, 200) anyone may open.
fn make_tun(path: &Path) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mknod creates one node.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(10, 200)) };
    assert_eq!(rc, 0, "mknod {}", path.display());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
}

fn chown_tree(dir: &Path, uid: u32) {
    let status = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// What a rootless Podman user does: a network of their own, a server with
/// a published port, a client finding it by name, egress, removal. Every
/// kernel object lives in the user's rootless namespace, none in the host's.
#[test]
fn rootless_podman_runs_on_rete() {
    require_rootless_podman!();
    let p = Rootless::new("run");
    p.ok(&["network", "create", "--subnet", "10.91.0.0/24", "mine"]);
    let script = "nc -ll -p 80 -e echo hello from web";
    p.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "mine",
        "-p",
        "8080:80",
        "localhost/busybox",
        "sh",
        "-c",
        script,
    ]);
    let addr = p.ip_of("web", "mine");
    assert!(
        "10.91.0.0/24"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&addr),
        "{addr}"
    );

    // rete holds the container in the user's store, not root's.
    let id = p.id_of("web");
    assert_eq!(p.rete_containers(), vec![id]);
    assert!(
        !p.lab.state_dir().exists() || p.lab.rete_ok(&["ls", "-q"]).trim().is_empty(),
        "a rootless container in root's store"
    );
    // Nothing in the host's namespace: no rete table, no rete links.
    assert!(
        p.lab.links_named("rete-").is_empty(),
        "{:?}",
        p.lab.host_links()
    );
    let tables = sh_in(&p.lab.host, "nft list tables");
    assert!(!tables.contains("inet rete"), "{tables}");

    // A second container finds web by name and gets its reply.
    let out = p.sh_on("mine", "nslookup web >/dev/null && nc -w 3 web 80");
    assert_eq!(out.trim(), "hello from web");

    // The published port answers from the outside, through rootlessport
    // on the host's uplink address.
    let mut reply = None;
    wait_for(10, || {
        reply = tcp_get(&p.lab.outside, ip(UPLINK_HOST), 8080);
        reply.as_deref() == Some("hello from web\n")
    });
    assert_eq!(reply.as_deref(), Some("hello from web\n"));

    // Egress reaches the outside namespace (through slirp4netns).
    let _srv = Server::tcp(&p.lab.outside, ip(UPLINK_OUTSIDE), 7000, "outside", 1);
    let out = p.sh_on("mine", &format!("nc -w 3 {UPLINK_OUTSIDE} 7000"));
    assert!(out.starts_with("outside"), "{out}");

    // Removal leaves nothing in the user's store.
    p.ok(&["rm", "-f", "-t", "0", "web"]);
    assert!(p.rete_containers().is_empty());
}
