//! Where rete keeps things: the state dir (the store), the run dir (runtime
//! files: the operation journal) and the directory namespaces are pinned in.

use std::path::PathBuf;

/// Paths of one rete installation; tests give each run its own.
#[derive(Debug, Clone)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub netns_dir: PathBuf,
    /// Per-container resolv.conf and hosts, where `ip netns exec` looks.
    pub etc_dir: PathBuf,
}

impl Paths {
    /// Defaults, overridden by RETE_STATE_DIR, RETE_RUN_DIR, RETE_NETNS_DIR and
    /// RETE_NETNS_ETC_DIR.
    pub fn from_env() -> Self {
        let var = |k: &str, d: &str| PathBuf::from(std::env::var_os(k).unwrap_or_else(|| d.into()));
        Paths {
            state_dir: var("RETE_STATE_DIR", "/var/lib/rete"),
            run_dir: var("RETE_RUN_DIR", "/run/rete"),
            netns_dir: var("RETE_NETNS_DIR", "/run/netns"),
            etc_dir: var("RETE_NETNS_ETC_DIR", "/etc/netns"),
        }
    }

    /// For rootless Podman: everything under `base` (a directory of the
    /// user's, where Podman keeps netavark's files), each still overridden
    /// by its RETE_* variable. Root's defaults are not the user's to write,
    /// and a user's containers must not meet root's in one store.
    pub fn under(base: &std::path::Path) -> Self {
        let var = |k: &str, d: &str| {
            std::env::var_os(k)
                .map(PathBuf::from)
                .unwrap_or_else(|| base.join(d))
        };
        Paths {
            state_dir: var("RETE_STATE_DIR", "state"),
            run_dir: var("RETE_RUN_DIR", "run"),
            netns_dir: var("RETE_NETNS_DIR", "netns"),
            etc_dir: var("RETE_NETNS_ETC_DIR", "etc-netns"),
        }
    }

    /// [`Paths::from_env`], with settings the environment lacks taken from
    /// `file` (`KEY=VALUE` lines of the same variables) if it exists.
    pub fn from_env_and_file(file: &std::path::Path) -> Self {
        let mut paths = Paths::from_env();
        let Ok(text) = std::fs::read_to_string(file) else {
            return paths;
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim(), PathBuf::from(value.trim()));
            if std::env::var_os(key).is_some() {
                continue;
            }
            match key {
                "RETE_STATE_DIR" => paths.state_dir = value,
                "RETE_RUN_DIR" => paths.run_dir = value,
                "RETE_NETNS_DIR" => paths.netns_dir = value,
                "RETE_NETNS_ETC_DIR" => paths.etc_dir = value,
                _ => {}
            }
        }
        paths
    }
}
