//! `podman run --rm IMAGE true`, end to end, with Podman's own netavark and
//! with rete as Podman's netavark, interleaved in one run.
//!
//! Podman 4.3 (Debian) as root, set up the way tests/podman.rs sets it up: a
//! private containers.conf (runtime runc, cgroupfs, no events, file locks,
//! private tmp/static/volume/network dirs; default_ulimits = this machine's
//! hard limits, since `--ulimit host` fails in runc here), private storage
//! (vfs; --root/--runroot in the lab) and an image imported from a
//! busybox-static rootfs tarball. Backends:
//! - netavark: helper_binaries_dir = ["/usr/lib/podman"] (netavark 1.4.0);
//! - rete:     helper_binaries_dir = [DIR, "/usr/lib/podman"], DIR holding a
//!   symlink named `netavark` to the rete binary;
//! - none:     the netavark configuration with `--network none` (no backend
//!   is called): what a run costs without networking, for reference.
//!
//! Containment. Each backend runs Podman inside a network namespace of its
//! own (pinned in the lab), so the root namespace is never changed. The
//! whole program runs in a private mount namespace in which lab directories
//! are bind-mounted over /run (Podman's netns pins, its IPAM database in
//! /run/containers/networks, runc's state), /var/lib/containers (the image
//! copy cache `podman import` writes), /var/lib/rete and /etc/netns
//! (rete's default store: `podman container cleanup`, which conmon starts
//! for the teardown, gets none of Podman's environment, so RETE_STATE_DIR
//! would not reach rete there; the defaults must be the lab's). Nothing
//! Podman, conmon, runc or rete write under those paths reaches the
//! machine's, and the mounts vanish with the namespace. On exit, also on
//! error, the program removes every container, waits for (then kills) any
//! process left in its mount namespace, checks the cgroups of its containers
//! are gone, and removes the lab.
//!
//! Run as root: `bench/run.sh --podman-only` or
//! `cargo build --release --bin rete --example bench_podman && target/x86_64-unknown-linux-musl/release/examples/bench_podman --runs 15`.

#[path = "lab.rs"]
mod lab;

use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use lab::{cmd_in, ip_batch, median, ms, timed, Lab, Res};

#[derive(Parser)]
#[command(about = "podman run --rm IMAGE true: Podman's netavark vs rete as netavark")]
struct Args {
    /// Timed runs per backend (interleaved)
    #[arg(long, default_value_t = 15)]
    runs: usize,
    /// Untimed runs per backend first
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Also time `--network none` (no backend), for reference
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    none: bool,
    #[arg(long)]
    rete: Option<PathBuf>,
    /// Directory of Podman's helpers (netavark, aardvark-dns)
    #[arg(long, default_value = "/usr/lib/podman")]
    helpers: PathBuf,
    /// Write every run here as CSV: backend,run,ms
    #[arg(long)]
    csv: Option<PathBuf>,
}

struct Backend {
    name: &'static str,
    dir: PathBuf,
    /// The host namespace, open for every command's setns.
    host_fd: File,
    network: &'static str,
}

impl Backend {
    fn podman(&self, args: &[&str]) -> Command {
        let mut cmd = cmd_in(&self.host_fd, "podman");
        let d = &self.dir;
        cmd.arg("--root")
            .arg(d.join("graph"))
            .arg("--runroot")
            .arg(d.join("rr"))
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", "/dev/null")
            .stdin(Stdio::null());
        cmd
    }

    fn ok(&self, args: &[&str]) -> Res<String> {
        lab::run(&mut self.podman(args), b"")
    }
}

fn main() {
    let args = Args::parse();
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bench_podman: needs root");
        std::process::exit(1);
    }
    for (what, path) in [
        ("podman", "/usr/bin/podman"),
        ("busybox-static", "/bin/busybox"),
    ] {
        if !Path::new(path).exists() {
            eprintln!(
                "bench_podman: needs {what} ({path}): apt-get install -y podman busybox-static"
            );
            std::process::exit(1);
        }
    }
    // Short: Podman refuses a runroot longer than 50 characters.
    let base = std::env::temp_dir().join(format!("rbp-{}", std::process::id()));
    let code = match Private::enter(&base) {
        Ok(private) => {
            let r = bench(&args, &base);
            drop(private);
            match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("bench_podman: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("bench_podman: {e}");
            let _ = std::fs::remove_dir_all(&base);
            1
        }
    };
    std::process::exit(code);
}

/// The private mount namespace and the lab directories bound over /run,
/// /var/lib/rete and /etc/netns in it. Dropping it waits for the processes
/// left in the namespace, unmounts and removes the directory.
struct Private {
    base: PathBuf,
    binds: Vec<PathBuf>,
    created: Vec<PathBuf>,
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("path without NUL")
}

fn bind(from: &Path, to: &Path) -> Res<()> {
    // SAFETY: valid C strings; a plain bind mount.
    let r = unsafe {
        libc::mount(
            cstr(from).as_ptr(),
            cstr(to).as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(format!(
            "bind {} over {}: {}",
            from.display(),
            to.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

impl Private {
    /// Must run while the process has one thread (unshare(CLONE_NEWNS)).
    fn enter(base: &Path) -> Res<Private> {
        std::fs::create_dir_all(base).map_err(|e| format!("{}: {e}", base.display()))?;
        let mut p = Private {
            base: base.to_path_buf(),
            binds: Vec::new(),
            created: Vec::new(),
        };
        // SAFETY: plain syscalls; single-threaded here.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(format!(
                    "unshare(CLONE_NEWNS): {}",
                    std::io::Error::last_os_error()
                ));
            }
            let root = cstr(Path::new("/"));
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(format!(
                    "make / private: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        // /run: a fresh directory with what Podman, runc and rete expect.
        let run = base.join("run");
        for d in ["netns", "containers", "runc", "rete", "lock", "user"] {
            std::fs::create_dir_all(run.join(d)).map_err(|e| e.to_string())?;
        }
        let _ = std::os::unix::fs::symlink("/dev/shm", run.join("shm"));
        bind(&run, Path::new("/run"))?;
        p.binds.push("/run".into());
        for (target, dir) in [
            ("/var/lib/rete", "var-lib-rete"),
            ("/var/lib/containers", "var-lib-containers"),
            ("/etc/netns", "etc-netns"),
        ] {
            let target = Path::new(target);
            if !target.exists() {
                // rete would make it on first use; made here, removed at the end.
                std::fs::create_dir_all(target)
                    .map_err(|e| format!("{}: {e}", target.display()))?;
                p.created.push(target.to_path_buf());
            }
            let from = base.join(dir);
            std::fs::create_dir_all(&from).map_err(|e| e.to_string())?;
            bind(&from, target)?;
            p.binds.push(target.to_path_buf());
        }
        Ok(p)
    }
}

/// Processes other than this one in this mount namespace (Podman's, conmon,
/// `podman container cleanup`, ...): only our descendants can be in it.
fn strays() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(ours) = std::fs::read_link("/proc/self/ns/mnt") else {
        return Vec::new();
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
                .ok()
                .as_ref()
                == Some(&ours)
        })
        .collect()
}

/// Waits up to `secs` for the processes left in the namespace to end.
fn wait_strays(secs: u64) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = strays();
        if s.is_empty() || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let left = wait_strays(30);
        for pid in &left {
            eprintln!("bench_podman: killing process {pid} left in the lab's mount namespace");
            // SAFETY: plain kill(2) of a process found just above.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        for t in self.binds.iter().rev() {
            // SAFETY: a valid C string; MNT_DETACH cannot block.
            unsafe { libc::umount2(cstr(t).as_ptr(), libc::MNT_DETACH) };
        }
        for t in &self.created {
            let _ = std::fs::remove_dir(t);
        }
        unmount_under(&self.base);
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Lazily unmounts everything mounted at or below `dir`, deepest first.
fn unmount_under(dir: &Path) {
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
        // SAFETY: a valid C string; MNT_DETACH cannot block.
        unsafe { libc::umount2(cstr(Path::new(&p)).as_ptr(), libc::MNT_DETACH) };
    }
}

/// This machine's hard limits (Podman's default nofile exceeds them, and
/// `--ulimit host` fails in runc), as tests/podman.rs does.
fn ulimits() -> (u64, u64) {
    let hard = |r| {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct.
        unsafe { libc::getrlimit(r, &mut l) };
        l.rlim_max
    };
    (
        hard(libc::RLIMIT_NOFILE).min(1_048_576),
        hard(libc::RLIMIT_NPROC).min(32_768),
    )
}

/// A one-binary image: busybox-static with a link per applet, as a tarball.
fn busybox_tar(dir: &Path) -> Res<PathBuf> {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).map_err(|e| e.to_string())?;
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).map_err(|e| e.to_string())?;
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .map_err(|e| e.to_string())?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    let tar = dir.join("busybox.tar");
    lab::run(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        b"",
    )?;
    Ok(tar)
}

fn setup(
    lab: &Lab,
    name: &'static str,
    helpers: &[PathBuf],
    network: &'static str,
) -> Res<Backend> {
    let d = lab.subdir(name)?;
    let host = lab.netns(&format!("rb-podman-{name}-{}", std::process::id()))?;
    ip_batch(&host, "link set lo up")?;
    let (nofile, nproc) = ulimits();
    let helpers: Vec<String> = helpers
        .iter()
        .map(|h| format!("\"{}\"", h.display()))
        .collect();
    std::fs::write(
        d.join("containers.conf"),
        format!(
            r#"[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]

[engine]
helper_binaries_dir = [{helpers}]
network_backend = "netavark"
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
lock_type = "file"
tmp_dir = "{d}/podman-tmp"
static_dir = "{d}/podman-static"
volume_path = "{d}/podman-volumes"

[network]
network_config_dir = "{d}/podman-networks"
"#,
            helpers = helpers.join(", "),
            d = d.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        d.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/graph\"\nrunroot = \"{d}/rr\"\n",
            d = d.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok(Backend {
        name,
        dir: d,
        host_fd: host.open()?,
        network,
    })
}

/// Ids of the containers a run made (from its --cidfile).
fn cid(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn one_run(b: &Backend, n: usize, cids: &mut Vec<String>) -> Res<Duration> {
    let cidfile = b.dir.join(format!("cid-{n}"));
    let cf = cidfile.to_string_lossy().into_owned();
    let mut cmd = b.podman(&[
        "run",
        "--rm",
        "--network",
        b.network,
        "--cidfile",
        &cf,
        "localhost/busybox",
        "true",
    ]);
    let r = timed(&mut cmd, b"").map(|r| r.0);
    if let Some(id) = cid(&cidfile) {
        cids.push(id);
    }
    r.map_err(|e| format!("{}: {e}", b.name))
}

fn bench(args: &Args, base: &Path) -> Res<()> {
    let started = Instant::now();
    let lab = Lab::new(Some(base.join("l")), "podman")?;
    let rete = std::fs::canonicalize(args.rete.clone().unwrap_or_else(lab::default_rete))
        .map_err(|e| format!("rete binary: {e}"))?;
    let bin = lab.subdir("rete-as-netavark")?;
    std::os::unix::fs::symlink(&rete, bin.join("netavark")).map_err(|e| e.to_string())?;

    let mut backends = vec![
        setup(
            &lab,
            "netavark",
            std::slice::from_ref(&args.helpers),
            "bridge",
        )?,
        setup(&lab, "rete", &[bin.clone(), args.helpers.clone()], "bridge")?,
    ];
    if args.none {
        backends.push(setup(
            &lab,
            "none",
            std::slice::from_ref(&args.helpers),
            "none",
        )?);
    }
    let tar = busybox_tar(&lab.dir)?;
    let tar = tar.to_string_lossy().into_owned();
    for b in &backends {
        b.ok(&["import", &tar, "localhost/busybox:latest"])?;
    }
    let mut cids = Vec::new();
    let result = check(&backends).and_then(|()| measure(args, &backends, &mut cids));
    // Whatever happened: no container left, then the checks.
    for b in &backends {
        let _ = b.ok(&["rm", "-af", "-t", "0"]);
    }
    let left = wait_strays(30);
    let mut notes = Vec::new();
    if !left.is_empty() {
        notes.push(format!("processes still running after the runs: {left:?}"));
    }
    for id in &cids {
        for ctl in ["memory", "pids", "cpu", "systemd", "unified"] {
            let p = PathBuf::from(format!("/sys/fs/cgroup/{ctl}/libpod_parent/libpod-{id}"));
            if p.exists() {
                notes.push(format!("cgroup left: {}", p.display()));
            }
        }
    }
    for b in &backends {
        let ps = b.ok(&["ps", "-aq"]).unwrap_or_default();
        if !ps.trim().is_empty() {
            notes.push(format!("{}: containers left: {}", b.name, ps.trim()));
        }
        let links = lab::run(cmd_in(&b.host_fd, "ip").args(["-o", "link", "show"]), b"")?;
        let veths = links
            .lines()
            .filter(|l| l.contains("veth") || l.contains("@if"))
            .count();
        if veths != 0 {
            notes.push(format!("{}: {veths} veths left in its namespace", b.name));
        }
    }
    let store = lab::run(
        cmd_in(&backends[1].host_fd, rete.to_str().unwrap())
            .args(["ls", "--format", "json"])
            .env_remove("RETE_STATE_DIR"),
        b"",
    )?;
    let left_in_store = serde_json::from_str::<serde_json::Value>(&store)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(usize::MAX);
    if left_in_store != 0 {
        notes.push(format!(
            "rete's store still lists {left_in_store} containers: {store}"
        ));
    }
    let runs = result?;

    if let Some(path) = &args.csv {
        let mut out = String::from("backend,run,ms\n");
        for (b, v) in backends.iter().zip(&runs) {
            for (i, x) in v.iter().enumerate() {
                out.push_str(&format!("{},{},{x:.3}\n", b.name, i + 1));
            }
        }
        std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let podman = Command::new("podman")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "## podman run --rm IMAGE true, {} runs per backend",
        args.runs
    );
    println!();
    println!("- machine: {}", lab::machine());
    println!("- {podman}, runc, cgroupfs, vfs storage, image imported from busybox-static");
    println!("- rete: {}", rete.display());
    println!("- run took {:.0} s", started.elapsed().as_secs_f64());
    println!();
    println!("| backend | median (ms) | min | max | runs (ms) |");
    println!("|---|---:|---:|---:|---|");
    for (b, v) in backends.iter().zip(&runs) {
        let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = v.iter().cloned().fold(0.0, f64::max);
        let all: Vec<String> = v.iter().map(|x| format!("{x:.0}")).collect();
        println!(
            "| {} | {:.1} | {min:.1} | {max:.1} | {} |",
            if b.network == "none" {
                "none (--network none)"
            } else {
                b.name
            },
            median(v),
            all.join(", ")
        );
    }
    println!();
    let (n, r) = (&runs[0], &runs[1]);
    let d: Vec<f64> = r.iter().zip(n).map(|(a, b)| a - b).collect();
    let faster = d.iter().filter(|x| **x < 0.0).count();
    println!(
        "- rete / netavark (medians): {:.3}; paired (run i of each, moments apart): median rete - netavark {:+.1} ms, rete faster in {faster}/{}",
        median(r) / median(n),
        median(&d),
        d.len()
    );
    if runs.len() > 2 {
        let none = median(&runs[2]);
        println!(
            "- networking's share (median minus --network none): netavark {:.1} ms, rete {:.1} ms",
            median(n) - none,
            median(r) - none
        );
    }
    println!(
        "- target measurably faster end to end: {}",
        if median(r) < median(n) && faster * 4 >= d.len() * 3 {
            "met"
        } else {
            "NOT met"
        }
    );
    if notes.is_empty() {
        println!("- after the runs: no container, veth, process, cgroup or rete store entry left");
    } else {
        for n in &notes {
            println!("- WARNING: {n}");
        }
        return Err(notes.join("; "));
    }
    Ok(())
}

/// Untimed: a container of each bridge backend gets an address on Podman's
/// default network (10.88.0.0/16).
fn check(backends: &[Backend]) -> Res<()> {
    for b in backends.iter().filter(|b| b.network == "bridge") {
        let out = b.ok(&[
            "run",
            "--rm",
            "--network",
            "bridge",
            "localhost/busybox",
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "eth0",
        ])?;
        if !out.contains("inet 10.88.") {
            return Err(format!(
                "{}: the container has no address on Podman's network: {out}",
                b.name
            ));
        }
    }
    Ok(())
}

/// Warm-up, then `runs` rounds; in each round every backend runs once, the
/// order rotating round after round.
fn measure(args: &Args, backends: &[Backend], cids: &mut Vec<String>) -> Res<Vec<Vec<f64>>> {
    let k = backends.len();
    let mut n = 0;
    for _ in 0..args.warmup {
        for b in backends {
            n += 1;
            one_run(b, n, cids)?;
        }
    }
    let mut out: Vec<Vec<f64>> = vec![Vec::with_capacity(args.runs); k];
    for round in 0..args.runs {
        for j in 0..k {
            let i = (round + j) % k;
            n += 1;
            let dt = one_run(&backends[i], n, cids)?;
            out[i].push(ms(dt));
        }
        eprintln!(
            "round {}: {}",
            round + 1,
            backends
                .iter()
                .zip(&out)
                .map(|(b, v)| format!("{} {:.0} ms", b.name, v.last().copied().unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}
