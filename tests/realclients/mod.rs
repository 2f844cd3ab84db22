//! Shared pieces of the tests that drive real container clients (containerd's
//! `ctr`, Podman) through rete's CNI plugin: installing the Debian packages
//! they need, a busybox image made from busybox-static, bounded commands in
//! the lab's namespaces, HTTP from a namespace, and cleanup of mounts.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{enter_on_exec, in_ns, Lab};

/// What the image's web root serves.
pub const PAGE: &str = "hello-from-rete-container";

/// Finds `bin` in PATH (or as given, if absolute).
pub fn which(bin: &str) -> Option<PathBuf> {
    if bin.starts_with('/') {
        return Path::new(bin).exists().then(|| PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(bin))
        .find(|p| p.exists())
}

/// Makes sure each (binary, Debian package) is there, installing missing
/// packages with apt-get (bounded; `RETE_TEST_NO_APT=1` forbids it). Err
/// says why a test cannot run.
pub fn ensure_packages(needs: &[(&str, &str)]) -> Result<(), String> {
    let missing = |needs: &[(&str, &str)]| -> Vec<String> {
        let mut pkgs: Vec<String> = needs
            .iter()
            .filter(|(bin, _)| which(bin).is_none())
            .map(|(_, pkg)| pkg.to_string())
            .collect();
        pkgs.dedup();
        pkgs
    };
    let pkgs = missing(needs);
    if pkgs.is_empty() {
        return Ok(());
    }
    if std::env::var_os("RETE_TEST_NO_APT").is_some() {
        return Err(format!(
            "needs {} (apt-get install -y {}); RETE_TEST_NO_APT forbids installing",
            pkgs.join(" "),
            pkgs.join(" ")
        ));
    }
    let apt = |args: &[&str]| -> Output {
        Command::new("timeout")
            .args(["-k", "10", "600", "apt-get"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| Output {
                status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
                stdout: Vec::new(),
                stderr: e.to_string().into_bytes(),
            })
    };
    let mut install: Vec<&str> = vec!["install", "-y", "-q"];
    install.extend(pkgs.iter().map(String::as_str));
    eprintln!("installing {} with apt-get", pkgs.join(" "));
    let mut out = apt(&install);
    if !out.status.success() {
        let _ = apt(&["update", "-q"]);
        out = apt(&install);
    }
    let still = missing(needs);
    if still.is_empty() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        Err(format!(
            "cannot install {}: {}",
            still.join(" "),
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ))
    }
}

/// A rootfs of busybox-static with a link per applet, /etc/passwd and a
/// web root (/www/index.html says PAGE).
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "www", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = which("busybox").expect("busybox");
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    let list = Command::new(&busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("www/index.html"), PAGE).unwrap();
    root
}

/// Tars a rootfs as one uncompressed layer; returns the tarball.
pub fn layer_tar(root: &Path, out: &Path) -> PathBuf {
    let status = Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar the rootfs");
    out.to_path_buf()
}

/// A `docker save` style archive (manifest.json, config, one layer) of the
/// rootfs, tagged `tag`: what `ctr image import` takes.
pub fn docker_archive(root: &Path, dir: &Path, tag: &str) -> PathBuf {
    let img = dir.join("image");
    std::fs::create_dir_all(&img).unwrap();
    let layer = layer_tar(root, &img.join("layer.tar"));
    let sum = Command::new("sha256sum").arg(&layer).output().unwrap();
    assert!(sum.status.success(), "sha256sum");
    let digest = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": ["PATH=/bin"], "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{digest}")] },
    });
    std::fs::write(img.join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [tag],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(img.join("manifest.json"), manifest.to_string()).unwrap();
    let out = dir.join("image.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&img)
        .arg("-cf")
        .arg(&out)
        .args(["manifest.json", "config.json", "layer.tar"])
        .status()
        .unwrap();
    assert!(status.success(), "tar the image");
    out
}

/// `timeout -k 5 SECS PROG ARGS...` inside the namespace at `ns`.
pub fn bounded(ns: &Path, secs: u32, prog: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", &secs.to_string(), prog])
        .args(args)
        .stdin(Stdio::null());
    enter_on_exec(&mut cmd, ns);
    cmd
}

/// Runs a command; returns (success, stdout, stderr).
pub fn output(mut cmd: Command) -> (bool, String, String) {
    match cmd.output() {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Err(e) => (false, String::new(), e.to_string()),
    }
}

/// Polls `f` every 200 ms until it holds or `secs` pass.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One HTTP/1.0 GET from `ns` (3 s to connect, 3 s to answer); the whole
/// response, or None.
pub fn http_get(ns: &Path, addr: IpAddr, port: u16) -> Option<String> {
    in_ns(ns, move || {
        let t = Duration::from_secs(3);
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(addr, port), t).ok()?;
        s.set_read_timeout(Some(t)).ok()?;
        s.set_write_timeout(Some(t)).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: rete\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
}

/// Retries `http_get` until the page comes back or `secs` pass.
pub fn page_from(ns: &Path, addr: IpAddr, port: u16, secs: u64) -> Option<String> {
    let mut last = None;
    wait_for(secs, || {
        last = http_get(ns, addr, port);
        last.as_deref().is_some_and(|r| r.contains(PAGE))
    });
    last
}

/// Names of the containers in rete's store.
pub fn rete_names(lab: &Lab) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&lab.rete_ok(&["ls", "--format", "json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// Links of the lab's host namespace whose name starts with "rete".
pub fn rete_links(lab: &Lab) -> Vec<String> {
    lab.links_named("rete")
}

/// The IPv4 address busybox `ip` shows on eth0 of the output `out`.
pub fn shows_inet(out: &str, addr: IpAddr) -> bool {
    out.contains(&format!("inet {addr}/"))
}

/// Lazily unmounts everything mounted at or below `dir` (deepest first),
/// so removing a lab never reaches into a still-mounted rootfs.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p) {
            // SAFETY: a valid C string; MNT_DETACH cannot block.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Installs rete as a CNI plugin into `dir` with `rete cni install`.
pub fn install_rete(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_rete"))
        .args(["cni", "install", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rete cni install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("rete").exists() && dir.join("rete-ipam").exists());
}

/// The rete conflist for `lab`: network "retenet" on `subnet`, bridge
/// `bridge`, rete's store in the lab; `extra` is merged into the plugin
/// (e.g. a static runtimeConfig).
pub fn conflist(
    lab: &Lab,
    bridge: &str,
    subnet: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut plugin = serde_json::json!({
        "type": "rete",
        "bridge": bridge,
        "stateDir": lab.state_dir(),
        "runDir": lab.dir.join("run"),
        "ipam": { "type": "host-local", "ranges": [[{ "subnet": subnet }]] },
        "capabilities": { "portMappings": true },
    });
    if let Some(m) = extra.as_object() {
        for (k, v) in m {
            plugin[k] = v.clone();
        }
    }
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "retenet",
        "plugins": [plugin],
    })
}

/// Writes a file through a temporary name and a rename, so a runtime that
/// reads the directory never sees it half-written.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
