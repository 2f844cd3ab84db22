//! `rete agent`: one per host. It leases the host's subnet in etcd, keeps
//! the lease alive, makes the host's `cluster` network from the subnet, and
//! programs the datapath from the other hosts' records as they come and go.
//!
//! Failures of etcd never touch the datapath: the agent keeps what it has
//! programmed, retries with backoff, and on reconnecting lists the records
//! again and reconciles (which also covers a watch that fell behind
//! compaction). A stopped agent leaves everything in place, so a restart
//! does not disturb traffic; it takes its record over (same subnet) with a
//! new lease.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions};
use ipnet::{IpNet, Ipv4Net};

use super::datapath::{overlay_mtu, warn, Datapath};
use super::registry::{
    self, claim, etcd_error, Backend, ClusterConfig, EtcdConfig, NodeRecord, NodeRecordTemplate,
    SUBNETS_PREFIX,
};
use crate::engine::{NetworkRequest, SubnetRequest};
use crate::error::{Error, Result};
use crate::Engine;

/// The network every host makes from its subnet.
pub const CLUSTER_NETWORK: &str = "cluster";

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub etcd: EtcdConfig,
    pub backend: Backend,
    pub node: String,
    /// The underlay address; else found from the route toward etcd.
    pub underlay: Option<Ipv4Addr>,
    /// Seconds the host's record outlives its agent.
    pub lease_ttl: i64,
    /// Deliver traffic from other hosts straight into local containers
    /// (`crate::fastpath`'s routed program), and between local ones past
    /// the bridge.
    pub fastpath: bool,
}

/// How a session with etcd ended.
enum End {
    /// List again and go on (a watch that fell behind compaction).
    Relist,
    /// Someone removed this host's record (`rete node rm`).
    Removed,
}

/// Runs the agent until it is stopped or removed from the cluster.
pub fn run(engine: &mut Engine, opts: AgentOptions) -> Result<()> {
    crate::names::check_name("node", &opts.node)?;
    if opts.lease_ttl < 2 {
        return Err(Error::Invalid(format!(
            "--lease-ttl {} is too short: use 2 seconds or more",
            opts.lease_ttl
        )));
    }
    let underlay = match opts.underlay {
        Some(a) => a,
        None => registry::local_address_toward(&opts.etcd.endpoints)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::kernel("start the agent's runtime", e))?;
    let mut agent = Agent {
        state_file: engine.paths().state_dir.join("cluster-subnet"),
        engine,
        opts,
        underlay,
        datapath: None,
        last_lease: None,
    };
    runtime.block_on(agent.run())
}

struct Agent<'a> {
    engine: &'a mut Engine,
    opts: AgentOptions,
    underlay: Ipv4Addr,
    state_file: PathBuf,
    datapath: Option<Datapath>,
    /// The etcd lease of the last session, whose removal mark means stop.
    last_lease: Option<i64>,
}

impl Agent<'_> {
    async fn run(&mut self) -> Result<()> {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.session().await {
                Ok(End::Relist) => delay = Duration::from_millis(200),
                Ok(End::Removed) => {
                    eprintln!(
                        "rete agent: host {} was removed from the cluster (`rete node rm`); stopping",
                        self.opts.node
                    );
                    return Ok(());
                }
                // etcd is away or refused: keep the datapath, retry.
                Err(Error::Cluster(m)) => {
                    warn(&format!("{m}; retrying in {} ms", delay.as_millis()));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One connection to etcd: lease, claim, list, then follow the watch.
    async fn session(&mut self) -> Result<End> {
        let mut client = registry::connect(&self.opts.etcd).await?;
        // Removed between two sessions (while etcd was away, or when the
        // last session ended on the revoked lease): stop. A freshly started
        // agent joins again, whatever an earlier removal said.
        match self.last_lease {
            Some(lease) if registry::was_removed(&mut client, &self.opts.node, lease).await? => {
                let _ = registry::forget_removal(&mut client, &self.opts.node).await;
                return Ok(End::Removed);
            }
            Some(_) => {}
            None => registry::forget_removal(&mut client, &self.opts.node).await?,
        }
        let config = registry::read_config(&mut client).await?.ok_or_else(|| {
            Error::Cluster(
                "etcd holds no cluster settings; run `rete cluster init --etcd URL --cidr CIDR` once"
                    .into(),
            )
        })?;
        let lease = client
            .lease_grant(self.opts.lease_ttl, None)
            .await
            .map_err(|e| etcd_error("grant a lease", e))?
            .id();
        self.last_lease = Some(lease);
        let template = NodeRecordTemplate {
            node: &self.opts.node,
            underlay: self.underlay,
            backend: self.opts.backend,
        };
        let me = claim(&mut client, &config, template, self.preferred(), lease).await?;
        self.remember(me.subnet);
        self.build(&config, &me)?;

        let (mut keeper, mut alive) = client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| etcd_error("keep the lease alive", e))?;
        let (entries, revision) = registry::list(&mut client).await?;
        let peers: Vec<NodeRecord> = entries.into_iter().map(|e| e.record).collect();
        self.datapath_mut().reconcile(config.cidr, &peers)?;
        eprintln!(
            "rete agent: host {} holds {} ({} on {}); {} peer(s)",
            me.node,
            me.subnet,
            me.backend,
            me.underlay,
            self.datapath_mut().peers().count()
        );

        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1)
            .with_prev_key();
        let mut events = client
            .watch(SUBNETS_PREFIX, Some(options))
            .await
            .map_err(|e| etcd_error("watch hosts", e))?;
        let period = Duration::from_millis((self.opts.lease_ttl as u64 * 1000 / 3).max(500));
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    keeper.keep_alive().await.map_err(|e| etcd_error("renew the lease", e))?;
                    match alive.message().await.map_err(|e| etcd_error("renew the lease", e))? {
                        Some(r) if r.ttl() > 0 => {}
                        _ => return Err(Error::Cluster(format!(
                            "the lease of host {} expired", self.opts.node
                        ))),
                    }
                }
                message = events.message() => {
                    let Some(resp) = message.map_err(|e| etcd_error("watch hosts", e))? else {
                        return Err(Error::Cluster("etcd closed the watch".into()));
                    };
                    if resp.compact_revision() > 0 || resp.canceled() {
                        warn("the watch fell behind etcd's compaction; listing again");
                        return Ok(End::Relist);
                    }
                    for event in resp.events() {
                        match event.event_type() {
                            EventType::Put => {
                                let Some(kv) = event.kv() else { continue };
                                match serde_json::from_slice::<NodeRecord>(kv.value()) {
                                    Ok(r) => self.datapath_mut().upsert(&r)?,
                                    Err(e) => warn(&format!(
                                        "ignoring a malformed host record: {e}"
                                    )),
                                }
                            }
                            EventType::Delete => {
                                let Some(subnet) = event.kv().and_then(|kv| subnet_of_key(kv.key())) else {
                                    continue;
                                };
                                if subnet == me.subnet {
                                    // Removed (`rete node rm` marks it) or
                                    // expired (the agent was paused or cut
                                    // off past its TTL: claim the subnet
                                    // again in a new session, which also
                                    // looks for the mark first).
                                    if !registry::was_removed(&mut client, &me.node, lease).await? {
                                        return Err(Error::Cluster(format!(
                                            "the lease of host {} expired and etcd dropped its record",
                                            self.opts.node
                                        )));
                                    }
                                    let _ = registry::forget_removal(&mut client, &me.node).await;
                                    let _ = client.lease_revoke(lease).await;
                                    return Ok(End::Removed);
                                }
                                let gone: Vec<NodeRecord> = self
                                    .datapath_mut()
                                    .peers()
                                    .filter(|p| p.subnet == subnet)
                                    .cloned()
                                    .collect();
                                for p in gone {
                                    self.datapath_mut().remove(&p)?;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn datapath_mut(&mut self) -> &mut Datapath {
        self.datapath.as_mut().expect("built before use")
    }

    /// The host's cluster network and datapath, made once (kept as they are
    /// across sessions with the same subnet).
    fn build(&mut self, config: &ClusterConfig, me: &NodeRecord) -> Result<()> {
        let mtu = match me.backend {
            Backend::Vxlan => overlay_mtu(me.underlay)?,
            Backend::HostGw => None,
        };
        let net = self.engine.ensure_network(NetworkRequest {
            name: CLUSTER_NETWORK.into(),
            subnets: vec![SubnetRequest {
                subnet: IpNet::V4(me.subnet),
                gateway: None,
                ip_range: None,
                range_start: None,
                range_end: None,
            }],
            mtu,
            direct: vec![IpNet::V4(config.cidr)],
            options: if self.opts.fastpath {
                Default::default()
            } else {
                [("fastpath".to_string(), "false".to_string())].into()
            },
            ..Default::default()
        })?;
        if !net.subnets.iter().any(|s| s.subnet == IpNet::V4(me.subnet)) {
            return Err(Error::Conflict(format!(
                "network \"{CLUSTER_NETWORK}\" of this host has subnet {}, but the host now holds {}; remove its containers and the network, then start the agent again",
                net.subnets.first().map(|s| s.subnet.to_string()).unwrap_or_default(),
                me.subnet
            )));
        }
        if self.datapath.is_none() {
            let fastpath = self.opts.fastpath && net.fastpath();
            self.datapath = Some(Datapath::new(me.clone(), &net.bridge, fastpath)?);
        }
        Ok(())
    }

    /// The subnet this host held last, to ask for it again.
    fn preferred(&self) -> Option<Ipv4Net> {
        std::fs::read_to_string(&self.state_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn remember(&self, subnet: Ipv4Net) {
        if let Err(e) = std::fs::write(&self.state_file, format!("{subnet}\n")) {
            warn(&format!(
                "cannot record the subnet in {}: {e}",
                self.state_file.display()
            ));
        }
    }
}

/// The subnet a `/rete/subnets/a.b.c.d-len` key names.
fn subnet_of_key(key: &[u8]) -> Option<Ipv4Net> {
    let key = std::str::from_utf8(key).ok()?;
    let (addr, len) = key.strip_prefix(SUBNETS_PREFIX)?.split_once('-')?;
    Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()
}

/// Connects and runs `f` once: the short commands (`cluster init`,
/// `node ls`, `node rm`).
pub fn with_client<T>(
    etcd: &EtcdConfig,
    f: impl AsyncFnOnce(&mut Client) -> Result<T>,
) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::kernel("start a runtime", e))?;
    runtime.block_on(async {
        let mut client = registry::connect(etcd).await?;
        f(&mut client).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_subnet() {
        let s: Ipv4Net = "10.244.3.0/24".parse().unwrap();
        let key = registry::subnet_key(s);
        assert_eq!(key, "/rete/subnets/10.244.3.0-24");
        assert_eq!(subnet_of_key(key.as_bytes()), Some(s));
        assert_eq!(subnet_of_key(b"/rete/config"), None);
    }

    #[test]
    fn subnets_of_the_range() {
        let c = ClusterConfig::new("10.244.0.0/16".parse().unwrap(), 24).unwrap();
        let all: Vec<_> = c.subnets().collect();
        assert_eq!(all.len(), 256);
        assert_eq!(all[1], "10.244.1.0/24".parse::<Ipv4Net>().unwrap());
        assert!(ClusterConfig::new("10.244.0.0/16".parse().unwrap(), 8).is_err());
        assert!(ClusterConfig::new("10.244.0.0/16".parse().unwrap(), 31).is_err());
    }
}
