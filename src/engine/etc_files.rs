//! A container's resolv.conf and hosts, under ETC_DIR/NAME/ where `ip netns
//! exec NAME` bind-mounts them over /etc (and `rete exec`/`rete run` do the
//! same): the nameserver is rete's resolver on the gateway of the
//! container's first DNS-enabled network.

use std::fmt::Write;
use std::path::Path;

use crate::dns::zone::DOMAINS;
use crate::error::{Error, Result};
use crate::model::{Container, Network};

/// Writes the files for a container rete made (its own namespace).
pub(super) fn write(etc_dir: &Path, c: &Container, networks: &[Network]) -> Result<()> {
    let dir = etc_dir.join(&c.name);
    let io = |e: std::io::Error| Error::Store(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let mut nameservers = Vec::new();
    for ep in &c.endpoints {
        let names = match &c.hostname {
            Some(h) if h != &c.name => format!("{} {h}", c.name),
            _ => c.name.clone(),
        };
        for a in &ep.addresses {
            let _ = writeln!(hosts, "{}\t{names}", a.addr());
        }
        if let Some(n) = networks.iter().find(|n| n.name == ep.network && n.dns) {
            nameservers.extend(n.subnets.iter().map(|s| s.gateway));
        }
    }
    std::fs::write(dir.join("hosts"), hosts).map_err(io)?;
    if let Some(first) = nameservers.first() {
        let resolv = format!(
            "# written by rete: the resolver of network {}\nnameserver {first}\nsearch {}\noptions ndots:0\n",
            c.endpoints
                .iter()
                .find(|e| networks.iter().any(|n| n.name == e.network && n.dns))
                .map(|e| e.network.as_str())
                .unwrap_or_default(),
            DOMAINS[0]
        );
        std::fs::write(dir.join("resolv.conf"), resolv).map_err(io)?;
    } else {
        let _ = std::fs::remove_file(dir.join("resolv.conf"));
    }
    Ok(())
}

/// Removes them; nothing there is not an error.
pub(super) fn remove(etc_dir: &Path, name: &str) {
    let dir = etc_dir.join(name);
    let _ = std::fs::remove_file(dir.join("resolv.conf"));
    let _ = std::fs::remove_file(dir.join("hosts"));
    let _ = std::fs::remove_dir(dir);
}
