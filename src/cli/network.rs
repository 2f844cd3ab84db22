//! `rete network ...`

use std::net::IpAddr;

use clap::{Args, Subcommand};
use ipnet::IpNet;
use rete::engine::{NetworkRequest, SubnetRequest};
use rete::model::{Driver, StaticRoute};
use rete::{ipam, Engine, Error, Result};

use super::{key_values, output, Format};

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a network (bridge, or macvlan on a host device)
    Create(CreateArgs),
    /// List networks
    Ls(LsArgs),
    /// Show networks in detail (JSON)
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
    },
    /// Remove networks
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        /// Detach attached containers first
        #[arg(short, long)]
        force: bool,
    },
    /// Remove networks no container uses
    Prune,
    /// Attach a container to a network
    Connect {
        network: String,
        container: String,
        #[arg(long)]
        ip: Option<IpAddr>,
        /// Another name the container answers to on this network
        #[arg(long)]
        alias: Vec<String>,
    },
    /// Detach a container from a network
    Disconnect { network: String, container: String },
}

#[derive(Args)]
pub struct CreateArgs {
    name: String,
    /// bridge (containers behind a bridge, NAT out) or macvlan (containers
    /// on the link of a host device, --opt parent=DEVICE)
    #[arg(long, short = 'd', default_value = "bridge", value_parser = ["bridge", "macvlan"])]
    driver: String,
    /// Subnet in CIDR form, repeatable (IPv4 and IPv6 for dual stack)
    #[arg(long)]
    subnet: Vec<String>,
    /// Gateway of the subnet that contains it, repeatable
    #[arg(long)]
    gateway: Vec<IpAddr>,
    /// Range automatic addresses come from, inside its subnet, repeatable
    #[arg(long)]
    ip_range: Vec<String>,
    /// No route out and no masquerade
    #[arg(long)]
    internal: bool,
    #[arg(long)]
    mtu: Option<u32>,
    /// The bridge device's name
    #[arg(long = "interface")]
    bridge: Option<String>,
    #[arg(long)]
    label: Vec<String>,
    /// Driver options. bridge: isolate=true|false, masquerade=true|false,
    /// gso_max_size=BYTES (BIG TCP; default: the uplink's IPv4 GSO limit);
    /// macvlan: parent=DEVICE, mode=bridge|private|vepa|passthru; both:
    /// metric=N (the default route's metric), no_default_route=true
    #[arg(long, short = 'o')]
    opt: Vec<String>,
    /// A route every container gets: DESTINATION,GATEWAY[,METRIC] with the
    /// gateway on one of the network's subnets, repeatable
    #[arg(long)]
    route: Vec<StaticRoute>,
    /// No name resolution for containers on this network
    #[arg(long)]
    disable_dns: bool,
}

#[derive(Args)]
pub struct LsArgs {
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Only names
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(engine: &mut Engine, cmd: NetworkCommand) -> Result<i32> {
    match cmd {
        NetworkCommand::Create(a) => {
            let req = request(a)?;
            let net = engine.create_network(req)?;
            println!("{}", net.name);
        }
        NetworkCommand::Ls(a) => {
            let nets = engine.networks()?;
            if a.format == Format::Json {
                output::json(&nets);
            } else if a.quiet {
                nets.iter().for_each(|n| println!("{}", n.name));
            } else {
                let rows: Vec<Vec<String>> = nets
                    .iter()
                    .map(|n| {
                        vec![
                            n.id[..12].to_string(),
                            n.name.clone(),
                            n.driver.to_string(),
                            n.bridge.clone(),
                            n.subnets
                                .iter()
                                .map(|s| s.subnet.to_string())
                                .collect::<Vec<_>>()
                                .join(","),
                            match (n.internal, n.driver) {
                                (true, _) => "internal",
                                (false, Driver::Macvlan) => "direct",
                                (false, Driver::Bridge) => "nat",
                            }
                            .to_string(),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "NETWORK ID",
                        "NAME",
                        "DRIVER",
                        "DEVICE",
                        "SUBNETS",
                        "EGRESS",
                    ],
                    &rows,
                );
            }
        }
        NetworkCommand::Inspect { names, .. } => {
            let nets = names
                .iter()
                .map(|n| engine.network(n))
                .collect::<Result<Vec<_>>>()?;
            output::json(&nets);
        }
        NetworkCommand::Rm { names, force } => {
            for n in names {
                engine.remove_network(&n, force)?;
                println!("{n}");
            }
        }
        NetworkCommand::Prune => {
            for n in engine.prune_networks()? {
                println!("{n}");
            }
        }
        NetworkCommand::Connect {
            network,
            container,
            ip,
            alias,
        } => {
            engine.connect(&network, &container, ip, alias)?;
        }
        NetworkCommand::Disconnect { network, container } => {
            engine.disconnect(&network, &container)?;
        }
    }
    Ok(0)
}

/// Builds the engine's request: each --gateway and --ip-range goes to the
/// --subnet that contains it.
fn request(a: CreateArgs) -> Result<NetworkRequest> {
    let mut subnets: Vec<SubnetRequest> = a
        .subnet
        .iter()
        .map(|s| {
            ipam::parse_subnet(s).map(|subnet| SubnetRequest {
                subnet,
                gateway: None,
                ip_range: None,
                range_start: None,
                range_end: None,
            })
        })
        .collect::<Result<_, String>>()
        .map_err(Error::Invalid)?;
    if subnets.is_empty() && (!a.gateway.is_empty() || !a.ip_range.is_empty()) {
        return Err(Error::Invalid(
            "--gateway and --ip-range need a --subnet to belong to".into(),
        ));
    }
    for gw in a.gateway {
        let s = subnets
            .iter_mut()
            .find(|s| s.subnet.contains(&gw))
            .ok_or_else(|| Error::Invalid(format!("gateway {gw} is not inside any --subnet")))?;
        if s.gateway.replace(gw).is_some() {
            return Err(Error::Invalid(format!(
                "subnet {} has two gateways",
                s.subnet
            )));
        }
    }
    for r in a.ip_range {
        let range: IpNet = r.parse().map_err(|_| {
            Error::Invalid(format!("\"{r}\" is not a CIDR range such as 10.1.0.128/25"))
        })?;
        let s = subnets
            .iter_mut()
            .find(|s| s.subnet.contains(&range))
            .ok_or_else(|| Error::Invalid(format!("ip range {r} is not inside any --subnet")))?;
        if s.ip_range.replace(range.trunc()).is_some() {
            return Err(Error::Invalid(format!(
                "subnet {} has two ip ranges",
                s.subnet
            )));
        }
    }
    // The route options apply to every driver: the engine takes them as
    // fields, the rest of the options go to the driver.
    let mut options = key_values(&a.opt, "option")?;
    let (no_default_route, metric) = rete::engine::route_options(&options)?;
    options.remove("no_default_route");
    options.remove("metric");
    Ok(NetworkRequest {
        name: a.name,
        driver: if a.driver == "macvlan" {
            Driver::Macvlan
        } else {
            Driver::Bridge
        },
        subnets,
        internal: a.internal,
        mtu: a.mtu,
        bridge: a.bridge,
        labels: key_values(&a.label, "label")?,
        options,
        disable_dns: a.disable_dns,
        direct: Vec::new(),
        routes: a.route,
        no_default_route,
        metric,
    })
}
