//! The operation journal: before each kernel change an operation appends how
//! to undo it, so a failed operation rolls back in reverse order, and `rete
//! gc` can undo what a killed process left half done.
//!
//! Journals live in the run dir (tmpfs), one file per operation, named by pid.
//! A finished operation deletes its file; a file whose process is gone is the
//! trace of a crash.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::firewall::Element;

/// How to undo one kernel change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Undo {
    /// Delete a link of the host namespace (for a veth, both ends go).
    Link(String),
    /// Unpin and remove a namespace rete created.
    Netns(PathBuf),
    /// Delete firewall elements.
    Elements(Vec<Element>),
}

/// The journal of one operation in progress.
pub struct Journal {
    path: PathBuf,
    file: Option<File>,
    entries: Vec<Undo>,
}

impl Journal {
    pub fn begin(run_dir: &Path) -> Self {
        let nonce = u32::from_ne_bytes(crate::random::bytes());
        Journal {
            path: run_dir
                .join("journal")
                .join(format!("{}.{nonce:08x}", std::process::id())),
            file: None,
            entries: Vec::new(),
        }
    }

    /// Records an undo step; call it before making the change it undoes.
    pub fn record(&mut self, undo: Undo) -> Result<()> {
        if self.file.is_none() {
            let dir = self.path.parent().expect("journal path has a parent");
            fs::create_dir_all(dir).map_err(|e| {
                Error::Store(format!(
                    "cannot create {}: {e}; check --run-dir",
                    dir.display()
                ))
            })?;
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(|e| Error::Store(format!("{}: {e}", self.path.display())))?,
            );
        }
        let mut line = serde_json::to_string(&undo)?;
        line.push('\n');
        self.file
            .as_mut()
            .expect("opened above")
            .write_all(line.as_bytes())
            .map_err(|e| Error::Store(format!("{}: {e}", self.path.display())))?;
        self.entries.push(undo);
        Ok(())
    }

    /// The recorded steps, newest first: the order to undo them in.
    pub fn take_undo(&mut self) -> Vec<Undo> {
        let mut v = std::mem::take(&mut self.entries);
        v.reverse();
        v
    }

    /// Ends the operation: its changes stay, the journal goes.
    pub fn finish(mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Journals left by processes that no longer run, with their undo steps
/// newest first.
pub fn orphans(run_dir: &Path) -> Vec<(PathBuf, Vec<Undo>)> {
    let Ok(dir) = fs::read_dir(run_dir.join("journal")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid: Option<i32> = name.split('.').next().and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists()) {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap_or_default();
        let mut steps: Vec<Undo> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        steps.reverse();
        out.push((path, steps));
    }
    out
}
