//! Shared by the benchmarks: a throwaway lab of pinned network namespaces
//! under one temporary directory, commands spawned inside a namespace, timed
//! runs on the monotonic clock, a watchdog, and statistics.
//!
//! Every namespace the benchmarks use is created here (unshare + bind mount
//! under `<dir>/ns/`), so the machine's root namespace and /run/netns are
//! never touched. Dropping the lab, also on error or panic, kills the
//! background processes it started and unpins every namespace under
//! `<dir>/ns/` (the kernel then frees them with every device, address and
//! firewall rule inside). bench/run.sh does the same from a shell trap if the
//! process is killed.

#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub type Res<T> = Result<T, String>;

/// A pinned network namespace (its path: the lab removes it).
#[derive(Clone)]
pub struct Ns {
    pub path: PathBuf,
}

impl Ns {
    pub fn open(&self) -> Res<File> {
        File::open(&self.path).map_err(|e| format!("open {}: {e}", self.path.display()))
    }
}

pub struct Lab {
    pub dir: PathBuf,
    owns_dir: bool,
    background: Vec<Child>,
}

impl Lab {
    /// A lab in `dir` (created if missing), or in a new directory under the
    /// system temp dir.
    pub fn new(dir: Option<PathBuf>, tag: &str) -> Res<Lab> {
        let (dir, owns_dir) = match dir {
            Some(d) => (d, false),
            None => (
                std::env::temp_dir().join(format!("rete-bench-{tag}-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(dir.join("ns")).map_err(|e| format!("{}: {e}", dir.display()))?;
        start_watchdog();
        Ok(Lab {
            dir,
            owns_dir,
            background: Vec::new(),
        })
    }

    /// Creates a new namespace pinned at `<dir>/ns/<name>` (lo left down).
    pub fn netns(&self, name: &str) -> Res<Ns> {
        let path = self.dir.join("ns").join(name);
        rete::netns::create(&path)
            .map_err(|e| format!("create namespace {}: {e}", path.display()))?;
        Ok(Ns { path })
    }

    /// A directory under the lab.
    pub fn subdir(&self, name: &str) -> Res<PathBuf> {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        Ok(d)
    }

    /// Keeps a background process to be killed when the lab is dropped.
    pub fn keep(&mut self, c: Child) -> usize {
        self.background.push(c);
        self.background.len() - 1
    }

    pub fn background(&mut self, i: usize) -> &mut Child {
        &mut self.background[i]
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.background {
            let _ = c.kill();
            let _ = c.wait();
        }
        end_helpers(&self.dir);
        unpin_all(&self.dir.join("ns"));
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            let _ = std::fs::remove_dir_all(self.dir.join("ns"));
        }
    }
}

/// Ends background processes a program under test left running for the lab
/// (rete's resolver, say): those whose RETE_RUN_DIR lies inside `dir`. By
/// process id, after reading each one's environment.
fn end_helpers(dir: &Path) {
    let prefix = format!("RETE_RUN_DIR={}/", dir.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(p.path().join("environ")) else {
            continue;
        };
        if env
            .split(|b| *b == 0)
            .any(|v| v.starts_with(prefix.as_bytes()))
        {
            // SAFETY: plain kill(2) of a process found just above.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// Unpins every namespace below `dir` (recursively: rete pins its own under
/// its netns dir, which lives inside the lab).
fn unpin_all(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if rete::netns::is_pinned(&p) {
            let _ = rete::netns::remove(&p);
        } else if p.is_dir() {
            unpin_all(&p);
        }
    }
}

/// A command that runs inside the namespace `ns` (setns before exec, as
/// `nsenter --net=` would, without an extra process).
pub fn cmd_in(ns: &File, program: &str) -> Command {
    let fd = ns.as_raw_fd();
    let mut cmd = Command::new(program);
    // SAFETY: setns is async-signal-safe; `ns` outlives the spawn (callers
    // hold it across the call that spawns).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Runs a command to completion with `stdin` fed to it; returns the wall
/// time from just before the fork to just after the exit was reaped
/// (monotonic clock), and stdout. Non-zero exit is an error carrying stderr.
pub fn timed(cmd: &mut Command, stdin: &[u8]) -> Res<(Duration, String)> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawn {:?}: {e}", cmd.get_program()))?;
    watch(child.id());
    if let Some(mut w) = child.stdin.take() {
        // A process that exits without reading its input is not our error.
        let _ = w.write_all(stdin);
    }
    let out = child.wait_with_output();
    let dt = t0.elapsed();
    unwatch();
    let out = out.map_err(|e| format!("wait {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} failed ({}): {}{}",
            cmd.get_program().to_string_lossy(),
            cmd.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((dt, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Untimed run; returns stdout.
pub fn run(cmd: &mut Command, stdin: &[u8]) -> Res<String> {
    timed(cmd, stdin).map(|(_, out)| out)
}

// Processes a peer leaves behind: rete hands the kernel's after-work of a
// deletion (the rest of a bridge port's removal, under the rtnetlink lock,
// and grace periods) to a process of its own and returns. Left running, that
// work would land in the next peer's sample.

/// Makes this process the reaper of its orphaned descendants, so that
/// [`settle`] can wait for them.
pub fn adopt_orphans() -> Res<()> {
    // SAFETY: plain prctl(2).
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Waits, untimed and for at most `limit`, until every process left behind
/// by the commands run so far has ended (none running between commands but
/// those).
pub fn settle(limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        // SAFETY: plain waitpid(2), reaping any child without its status.
        match unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } {
            // ECHILD: no child left.
            r if r < 0 => return,
            0 if Instant::now() >= deadline => return,
            0 => std::thread::sleep(Duration::from_millis(1)),
            _ => {}
        }
    }
}

/// Runs an `ip -batch -` script inside a namespace.
pub fn ip_batch(ns: &Ns, script: &str) -> Res<()> {
    let f = ns.open()?;
    let mut cmd = cmd_in(&f, "ip");
    cmd.args(["-batch", "-"]);
    run(&mut cmd, script.as_bytes()).map(drop)
}

// The watchdog: a command that runs longer than WATCHDOG_SECS is killed, so
// a hung peer fails the run (and the lab is cleaned up) instead of hanging.

const WATCHDOG_SECS: u64 = 60;
static CURRENT: AtomicI32 = AtomicI32::new(0);
static SINCE_MS: AtomicU64 = AtomicU64::new(0);
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn start_watchdog() {
    if EPOCH.set(Instant::now()).is_err() {
        return;
    }
    std::thread::spawn(|| loop {
        std::thread::sleep(Duration::from_secs(1));
        let pid = CURRENT.load(Ordering::SeqCst);
        let since = SINCE_MS.load(Ordering::SeqCst);
        let now = EPOCH.get().unwrap().elapsed().as_millis() as u64;
        if pid > 0 && now.saturating_sub(since) > WATCHDOG_SECS * 1000 {
            eprintln!("watchdog: process {pid} ran over {WATCHDOG_SECS} s; killing it");
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
}

fn watch(pid: u32) {
    if let Some(e) = EPOCH.get() {
        SINCE_MS.store(e.elapsed().as_millis() as u64, Ordering::SeqCst);
    }
    CURRENT.store(pid as i32, Ordering::SeqCst);
}

fn unwatch() {
    CURRENT.store(0, Ordering::SeqCst);
}

// Statistics.

pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line describing the machine: cores and kernel.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), kernel {kernel}")
}

/// The rete binary next to this example's build (target/x86_64-unknown-linux-musl/release/rete).
pub fn default_rete() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/x86_64-unknown-linux-musl/release/examples/bench_x -> target/x86_64-unknown-linux-musl/release/rete
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("rete"))
        .unwrap_or_else(|| PathBuf::from("target/x86_64-unknown-linux-musl/release/rete"))
}
