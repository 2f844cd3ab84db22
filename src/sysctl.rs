//! Kernel parameters under /proc/sys. /proc/sys/net shows the network
//! namespace of the process that opens it, so these act on rete's namespace.
//!
//! They are reached through a procfs instance of rete's own, where one
//! can be made (see [`proc_root`]): on a host with many network namespaces,
//! a lookup under the shared /proc/sys/net can cost milliseconds.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

/// Sets `key` (dotted, as `sysctl` names it) to `value` unless it already is.
pub fn ensure(key: &str, value: &str) -> Result<()> {
    let path = format!("sys/{}", key.replace('.', "/"));
    ensure_at(&path, value).map_err(|e| Error::kernel(format!("set {key}={value}"), e))
}

/// The per-interface form of [`ensure`]; interface names may contain dots,
/// which the dotted form cannot carry.
pub fn ensure_if(family: &str, ifname: &str, leaf: &str, value: &str) -> Result<()> {
    let path = format!("sys/net/{family}/conf/{ifname}/{leaf}");
    ensure_at(&path, value)
        .map_err(|e| Error::kernel(format!("set net.{family}.conf.{ifname}.{leaf}={value}"), e))
}

/// Sets a per-interface parameter without reading it first: for a link
/// just made, whose value is the default.
pub fn set_if(family: &str, ifname: &str, leaf: &str, value: &str) -> Result<()> {
    let path = format!("sys/net/{family}/conf/{ifname}/{leaf}");
    write_at(&path, value)
        .map_err(|e| Error::kernel(format!("set net.{family}.conf.{ifname}.{leaf}={value}"), e))
}

fn ensure_at(path: &str, value: &str) -> std::io::Result<()> {
    if read_at(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    write_at(path, value)
}

fn read_at(path: &str) -> std::io::Result<String> {
    let mut s = String::new();
    open_at(path, OFlag::O_RDONLY)?.read_to_string(&mut s)?;
    Ok(s)
}

fn write_at(path: &str, value: &str) -> std::io::Result<()> {
    open_at(path, OFlag::O_WRONLY)?.write_all(value.as_bytes())
}

/// Opens `path` (relative to a procfs root, e.g. "sys/net/...").
fn open_at(path: &str, flags: OFlag) -> std::io::Result<File> {
    let fd = match proc_root() {
        Some(root) => openat(root, path, flags | OFlag::O_CLOEXEC, Mode::empty())?,
        None => open(
            format!("/proc/{path}").as_str(),
            flags | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?,
    };
    Ok(File::from(fd))
}

/// A procfs instance of this process's own: a detached mount (fsopen,
/// fsmount), in no mount namespace, gone when the process ends. None where
/// the kernel or rete's privileges allow none; /proc serves then.
///
/// Why: in the shared /proc, each network namespace that has looked under
/// /proc/sys/net has its own dentries there, and those of one name (`ipv6`,
/// say) share one hash chain, newest first; a lookup compares each, under a
/// spinlock, until it meets its own namespace's. netavark and the CNI
/// plugins set sysctls in every container they make, so with a few thousand
/// of theirs writing one sysctl of a host end cost 2-4 ms (`perf record -a`
/// during `bench/run.sh --n 1000`). A fresh instance has no such chain;
/// making and dropping it costs ~0.25 ms of each process.
fn proc_root() -> Option<&'static OwnedFd> {
    static ROOT: OnceLock<Option<OwnedFd>> = OnceLock::new();
    ROOT.get_or_init(|| private_procfs().ok()).as_ref()
}

fn private_procfs() -> std::io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_long = 1;
    const FSCONFIG_CMD_CREATE: libc::c_long = 6;
    const FSMOUNT_CLOEXEC: libc::c_long = 1;
    // The raw calls: libc has their numbers but no wrappers.
    let fd = |r: libc::c_long| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            // SAFETY: a descriptor the kernel just returned, owned by no one else.
            Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) })
        }
    };
    // SAFETY: fsopen(2) with a NUL-terminated name.
    let fs = fd(unsafe { libc::syscall(libc::SYS_fsopen, c"proc".as_ptr(), FSOPEN_CLOEXEC) })?;
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: fsconfig(2) on that context; the command takes no key or value.
    let created = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            null,
            null,
            0,
        )
    };
    if created < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fsmount(2) of the created context.
    fd(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A setting made through rete's procfs lands in the namespace of the
    /// thread making it: here a new one, so the machine's is never touched.
    #[test]
    fn private_procfs_acts_on_the_callers_namespace() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a procfs and making a namespace need root");
            return;
        }
        assert!(
            proc_root().is_some(),
            "fsopen/fsmount of proc: {:?}",
            private_procfs().err()
        );
        let outer = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        std::thread::spawn(|| {
            // SAFETY: unshare(2) of this thread's network namespace only.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let read = || std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
            assert_eq!(
                read().trim(),
                "0",
                "a new namespace starts without forwarding"
            );
            ensure("net.ipv4.ip_forward", "1").unwrap();
            assert_eq!(read().trim(), "1");
            assert_eq!(read_at("sys/net/ipv4/ip_forward").unwrap().trim(), "1");
        })
        .join()
        .unwrap();
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
            outer,
            "the outer namespace is unchanged"
        );
    }
}
