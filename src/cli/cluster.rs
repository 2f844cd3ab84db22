//! `rete agent`, `rete cluster ...` and `rete node ...`: the multi-host
//! frontends over rete::cluster.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use ipnet::Ipv4Net;
use rete::cluster::agent::{self, with_client, AgentOptions};
use rete::cluster::registry::{self, Backend, ClusterConfig, EtcdConfig};
use rete::{Engine, Error, Result};
use serde::Serialize;

use super::{output, Format};

/// Where etcd is.
#[derive(Args)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated (http://IP:PORT)
    #[arg(long, env = "RETE_ETCD", value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// CA certificate (PEM) that signed etcd's server certificate
    #[arg(long, env = "RETE_ETCD_CA")]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client-cert-auth
    #[arg(long, env = "RETE_ETCD_CERT")]
    etcd_cert: Option<PathBuf>,
    /// The client certificate's key (PEM)
    #[arg(long, env = "RETE_ETCD_KEY")]
    etcd_key: Option<PathBuf>,
}

impl EtcdArgs {
    fn config(self) -> EtcdConfig {
        EtcdConfig {
            endpoints: self.etcd,
            ca: self.etcd_ca,
            cert: self.etcd_cert,
            key: self.etcd_key,
        }
    }
}

#[derive(Args)]
pub struct AgentArgs {
    #[command(flatten)]
    etcd: EtcdArgs,
    /// How packets reach other hosts' containers: vxlan (any underlay) or
    /// host-gw (hosts on one L2 segment)
    #[arg(long, default_value = "vxlan")]
    backend: Backend,
    /// This host's name in the cluster [default: the hostname]
    #[arg(long)]
    node_name: Option<String>,
    /// This host's underlay address [default: the source address toward etcd]
    #[arg(long, conflicts_with = "underlay_interface")]
    underlay: Option<Ipv4Addr>,
    /// The underlay interface (its first IPv4 address is used)
    #[arg(long)]
    underlay_interface: Option<String>,
    /// Seconds the host's record outlives a stopped agent
    #[arg(long, default_value_t = 10)]
    lease_ttl: i64,
    /// Deliver traffic from other hosts straight into the containers it is
    /// for (an eBPF program where it arrives); false routes it through the
    /// bridge
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    fastpath: bool,
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Set the cluster's container range, once, before the first agent
    Init {
        #[command(flatten)]
        etcd: EtcdArgs,
        /// The range every host's subnet comes from
        #[arg(long)]
        cidr: Ipv4Net,
        /// Prefix length of each host's subnet
        #[arg(long, default_value_t = 24)]
        subnet_len: u8,
    },
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List the cluster's hosts
    Ls {
        #[command(flatten)]
        etcd: EtcdArgs,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Remove a host: it vanishes from every peer's datapath
    Rm {
        #[command(flatten)]
        etcd: EtcdArgs,
        name: String,
    },
}

pub fn agent(engine: &mut Engine, a: AgentArgs) -> Result<i32> {
    let node = match a.node_name {
        Some(n) => n,
        None => nix::unistd::gethostname()
            .map_err(|e| Error::kernel("read the hostname", e))?
            .to_string_lossy()
            .into_owned(),
    };
    let underlay = match (a.underlay, a.underlay_interface) {
        (Some(ip), _) => Some(ip),
        (None, Some(dev)) => Some(rete::cluster::datapath::ipv4_of_link(&dev)?),
        (None, None) => None,
    };
    agent::run(
        engine,
        AgentOptions {
            etcd: a.etcd.config(),
            backend: a.backend,
            node,
            underlay,
            lease_ttl: a.lease_ttl,
            fastpath: a.fastpath,
        },
    )
    .map(|_| 0)
}

pub fn cluster(cmd: ClusterCommand) -> Result<i32> {
    match cmd {
        ClusterCommand::Init {
            etcd,
            cidr,
            subnet_len,
        } => {
            let config = ClusterConfig::new(cidr, subnet_len)?;
            with_client(&etcd.config(), async |c| registry::init(c, &config).await)?;
            println!("{}", config.cidr);
            Ok(0)
        }
    }
}

/// A host as `node ls` shows it.
#[derive(Serialize)]
struct NodeView {
    name: String,
    subnet: Ipv4Net,
    underlay: Ipv4Addr,
    backend: Backend,
    /// Seconds left on its lease; none when it is about to vanish.
    lease_ttl: Option<i64>,
    health: &'static str,
}

pub fn node(cmd: NodeCommand) -> Result<i32> {
    match cmd {
        NodeCommand::Ls { etcd, format } => {
            let nodes = with_client(&etcd.config(), async |c| {
                let (entries, _) = registry::list(c).await?;
                let mut out = Vec::new();
                for e in entries {
                    let ttl = registry::lease_ttl(c, e.lease).await;
                    out.push(NodeView {
                        name: e.record.node,
                        subnet: e.record.subnet,
                        underlay: e.record.underlay,
                        backend: e.record.backend,
                        lease_ttl: ttl,
                        health: if ttl.is_some() { "alive" } else { "expiring" },
                    });
                }
                Ok(out)
            })?;
            match format {
                Format::Json => output::json(&nodes),
                Format::Table => output::table(
                    &["NAME", "SUBNET", "UNDERLAY", "BACKEND", "HEALTH"],
                    &nodes
                        .iter()
                        .map(|n| {
                            vec![
                                n.name.clone(),
                                n.subnet.to_string(),
                                n.underlay.to_string(),
                                n.backend.to_string(),
                                n.health.to_string(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                ),
            }
            Ok(0)
        }
        NodeCommand::Rm { etcd, name } => {
            if !with_client(&etcd.config(), async |c| registry::remove(c, &name).await)? {
                return Err(Error::NotFound(format!(
                    "no host \"{name}\" in the cluster; see `rete node ls`"
                )));
            }
            println!("{name}");
            Ok(0)
        }
    }
}
