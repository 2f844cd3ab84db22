//! Network namespaces: create one pinned at a path (where `ip netns` looks),
//! open, enter on a throwaway thread, remove.
//!
//! Entering a namespace changes only the calling thread, so every function
//! here that needs to be inside one spawns a scoped thread for it; the
//! caller's thread never changes namespace.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// Runs `f` on a thread that has entered the network namespace `ns`.
pub fn run_in<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace worker thread panicked")))
    })
}

/// Creates a new network namespace and pins it by bind-mounting it on `path`.
/// Fails with `AlreadyExists` if `path` exists. Nothing is left behind on
/// failure.
pub fn create(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new().write(true).create_new(true).open(path)?;
    let pinned = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace worker thread panicked")))
    });
    if let Err(e) = pinned {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    File::open(path)
}

/// Opens a pinned namespace (or any nsfs path such as /proc/PID/ns/net).
pub fn open(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Unpins and removes a namespace created by [`create`]. The kernel frees the
/// namespace, and every device in it, once no process holds it. Removing a
/// path that is already gone is not an error.
pub fn remove(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether `path` is a pinned namespace (an nsfs mount), not a plain file.
pub fn is_pinned(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // nsfs inodes live on a device of their own; a plain file left behind by
    // an unpinned namespace shares its directory's device.
    match (fs::metadata(path), path.parent().map(fs::metadata)) {
        (Ok(m), Some(Ok(dir))) => m.dev() != dir.dev(),
        _ => false,
    }
}
