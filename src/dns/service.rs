//! Starting the resolver on demand. One resolver per run dir: it holds an
//! exclusive lock on RUN_DIR/dns.lock for its lifetime, so "is it running"
//! is a non-blocking lock attempt, and two racing starters cannot both win.

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};

use crate::config::Paths;
use crate::error::{Error, Result};

fn lock_file(run_dir: &Path) -> Result<File> {
    std::fs::create_dir_all(run_dir)
        .map_err(|e| Error::Store(format!("{}: {e}", run_dir.display())))?;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(run_dir.join("dns.lock"))
        .map_err(|e| Error::Store(format!("dns.lock: {e}")))
}

/// Takes the resolver's lock, or None if a resolver holds it.
pub fn claim(run_dir: &Path) -> Result<Option<Flock<File>>> {
    match Flock::lock(lock_file(run_dir)?, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(Error::Store(format!("dns.lock: {e}"))),
    }
}

/// Starts `rete dns serve` in the background unless a resolver runs.
pub fn ensure_running(paths: &Paths) -> Result<()> {
    let Some(lock) = claim(&paths.run_dir)? else {
        return Ok(());
    };
    drop(lock);
    let exe = std::env::current_exe().map_err(|e| Error::Store(format!("own binary: {e}")))?;
    let log = File::create(paths.run_dir.join("dns.log")).ok();
    let mut cmd = Command::new(exe);
    // Named `rete` whatever name started us (a CNI plugin, `netavark`).
    cmd.arg0("rete")
        .args(["dns", "serve"])
        .env("RETE_STATE_DIR", &paths.state_dir)
        .env("RETE_RUN_DIR", &paths.run_dir)
        .env("RETE_NETNS_DIR", &paths.netns_dir)
        .env("RETE_NETNS_ETC_DIR", &paths.etc_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0);
    match log {
        Some(f) => cmd.stderr(f),
        None => cmd.stderr(Stdio::null()),
    };
    cmd.spawn()
        .map_err(|e| Error::Store(format!("start the dns resolver: {e}")))?;
    Ok(())
}
