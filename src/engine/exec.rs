//! Running commands inside a container, and ending the ones rete started.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{container, Engine};
use crate::error::{Error, Result};
use crate::model::{Container, Process};

impl Engine {
    /// A command that runs `argv` inside the container's network namespace
    /// (and, with a hostname set, its own UTS namespace carrying it).
    pub fn command(&self, c: &Container, argv: &[String]) -> Result<Command> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| Error::Invalid("no command given: add -- CMD [ARGS...]".into()))?;
        let mut cmd = Command::new(prog);
        cmd.args(args);
        let ns = match &c.netns {
            Some(p) => Some(crate::netns::open(p).map_err(|e| {
                Error::NotFound(format!(
                    "namespace {} of container \"{}\" cannot be opened ({e}); run `rete gc`",
                    p.display(),
                    c.name
                ))
            })?),
            None => None,
        };
        let hostname = c.hostname.clone();
        // The container's resolv.conf and hosts go over /etc's in a mount
        // namespace of the command's own, as `ip netns exec` does.
        let etc = self.paths().etc_dir.join(&c.name);
        let binds: Vec<(CString, CString)> = ["resolv.conf", "hosts"]
            .iter()
            .filter(|f| etc.join(f).exists())
            .filter_map(|f| {
                Some((
                    CString::new(etc.join(f).as_os_str().as_bytes()).ok()?,
                    CString::new(format!("/etc/{f}")).ok()?,
                ))
            })
            .collect();
        // SAFETY: the closure only makes async-signal-safe system calls
        // (setns, unshare, mount, sethostname) between fork and exec, on
        // strings prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(ns) = &ns {
                    if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if !binds.is_empty() {
                    if libc::unshare(libc::CLONE_NEWNS) != 0
                        || libc::mount(
                            std::ptr::null(),
                            c"/".as_ptr(),
                            std::ptr::null(),
                            libc::MS_SLAVE | libc::MS_REC,
                            std::ptr::null(),
                        ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    for (src, dst) in &binds {
                        // A missing /etc file is not worth failing the command.
                        libc::mount(
                            src.as_ptr(),
                            dst.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND,
                            std::ptr::null(),
                        );
                    }
                }
                if let Some(h) = &hostname {
                    if libc::unshare(libc::CLONE_NEWUTS) != 0
                        || libc::sethostname(h.as_ptr().cast(), h.len()) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Records a detached process so `rete rm` ends it.
    pub fn record_process(&mut self, name: &str, pid: u32) -> Result<()> {
        let pid = pid as i32;
        let start_time = start_time(pid).unwrap_or(0);
        self.transact(|db, _, _| {
            let mut c = container::get(db, name)?;
            c.processes.retain(alive);
            c.processes.push(Process { pid, start_time });
            db.put_container(&c)
        })
    }
}

/// The start time of a process (field 22 of /proc/PID/stat), to tell a pid
/// from a later process that reused it.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields resume after ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn alive(p: &Process) -> bool {
    start_time(p.pid) == Some(p.start_time)
}

/// Ends the container's recorded processes: SIGTERM to each process group,
/// then SIGKILL after two seconds.
pub(super) fn end_processes(c: &Container) {
    let live: Vec<&Process> = c.processes.iter().filter(|p| alive(p)).collect();
    for p in &live {
        let _ = kill(Pid::from_raw(-p.pid), Signal::SIGTERM);
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while live.iter().any(|p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in live.iter().filter(|p| alive(p)) {
        let _ = kill(Pid::from_raw(-p.pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
    }
}
