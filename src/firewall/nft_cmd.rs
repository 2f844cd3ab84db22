//! The `nft` command, for what changes rarely: creating the table, network
//! elements (interval sets), and whole-table reconciliation. Kept off the
//! per-container path, which speaks netlink directly (see `elements`).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Runs an nft script as one transaction; returns what nft printed.
pub fn run(script: &str) -> Result<String> {
    let mut child = Command::new(nft_path())
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::Firewall(format!(
                "cannot run nft ({e}); install the nftables package"
            ))
        })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| Error::Firewall(format!("write to nft: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Firewall(format!("wait for nft: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or("failed").to_string();
        return Err(Error::Firewall(first));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nft_path() -> &'static str {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nft")
}
