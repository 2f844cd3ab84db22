//! Upstream resolvers: the nameservers of /etc/resolv.conf (or the file
//! RETE_RESOLV_CONF names), re-read whenever the file changes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::SystemTime;

pub struct Upstreams {
    path: PathBuf,
    stamp: Option<SystemTime>,
    servers: Vec<SocketAddr>,
}

impl Upstreams {
    pub fn from_env() -> Self {
        let path = std::env::var_os("RETE_RESOLV_CONF")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/etc/resolv.conf".into());
        let mut u = Upstreams {
            path,
            stamp: None,
            servers: Vec::new(),
        };
        u.refresh();
        u
    }

    /// Re-reads the file if its modification time changed.
    pub fn refresh(&mut self) {
        let stamp = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if stamp == self.stamp && stamp.is_some() {
            return;
        }
        self.stamp = stamp;
        self.servers = std::fs::read_to_string(&self.path)
            .map(|text| parse(&text))
            .unwrap_or_default();
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }
}

/// The `nameserver` lines of a resolv.conf.
pub fn parse(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_nameservers() {
        let s = super::parse(
            "# x\nsearch a\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\noptions ndots:1\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].to_string(), "192.0.2.53:53");
    }
}
