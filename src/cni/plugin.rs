//! The `rete` plugin type: one whole attachment per ADD, what the reference
//! chain bridge + host-local + portmap + bandwidth does, on rete's engine.
//! Networks made here are rete networks (`rete network ls` shows them), and
//! attachments are rete containers named by CNI_CONTAINERID.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use super::wire::{self, code, CniError, CniResult, Interface, IpConfig, NetConf, Route};
use super::{engine_error, Env};
use rete::engine::{AttachRequest, NetworkRequest, SubnetRequest};
use rete::model::{Bandwidth, Limit, Protocol, StaticRoute, Subnet};
use rete::portspec::{PortRange, PortSpec};
use rete::{Engine, Error};

/// The label that marks attachments made through CNI (for GC).
pub const FRONTEND: (&str, &str) = ("io.rete.frontend", "cni");

pub fn run(
    engine: &mut Engine,
    env: &Env,
    conf: NetConf,
    version: &str,
) -> Result<Option<Value>, CniError> {
    match env.command.as_str() {
        "ADD" => add(engine, env, conf, version).map(Some),
        "DEL" => {
            engine
                .detach(env.container()?, env.ifname()?)
                .map_err(engine_error)?;
            Ok(None)
        }
        "CHECK" => {
            env.netns()?;
            engine
                .check_attachment(env.container()?, env.ifname()?)
                .map_err(engine_error)?;
            Ok(None)
        }
        "STATUS" => {
            let room = match engine.network_has_room(&conf.name) {
                Err(Error::NotFound(_)) => true,
                other => other.map_err(|e| CniError::new(code::NOT_AVAILABLE, e.to_string()))?,
            };
            if !room {
                return Err(CniError::new(
                    code::NOT_AVAILABLE,
                    format!(
                        "network \"{}\" has no free address left; an ADD would fail",
                        conf.name
                    ),
                ));
            }
            Ok(None)
        }
        "GC" => {
            let valid = conf.valid_attachments.unwrap_or_default();
            for (container, ifname) in engine
                .attachments(&conf.name, FRONTEND)
                .map_err(engine_error)?
            {
                if !valid
                    .iter()
                    .any(|a| a.container_id == container && a.ifname == ifname)
                {
                    engine.detach(&container, &ifname).map_err(engine_error)?;
                }
            }
            Ok(None)
        }
        _ => unreachable!("commands are checked before dispatch"),
    }
}

fn add(engine: &mut Engine, env: &Env, conf: NetConf, version: &str) -> Result<Value, CniError> {
    let container = env.container()?.to_string();
    let ifname = env.ifname()?.to_string();
    let netns = env.netns()?.clone();
    if conf.is_gateway == Some(false) {
        return Err(unsupported(
            "isGateway",
            "false",
            "rete's bridge is always its containers' gateway",
        ));
    }
    if let Some(ipam) = &conf.ipam {
        if !matches!(ipam.kind.as_str(), "" | "rete" | "rete-ipam" | "host-local") {
            return Err(unsupported(
                "ipam.type",
                &ipam.kind,
                "the rete plugin allocates addresses itself; use host-local style ranges",
            ));
        }
    }
    if let Some(prev) = &conf.prev_result {
        // Refused before anything is attached: a result merged after the
        // attachment would fail with the attachment left in place.
        wire::merge(prev, Value::Object(Default::default()), version)
            .map_err(|m| CniError::new(code::DECODE, m))?;
    }

    let request = network_request(&conf)?;
    let wanted: Vec<Subnet> = request
        .subnets
        .iter()
        .map(|s| s.subnet)
        .map(|n| Subnet {
            subnet: n,
            gateway: n.addr(),
            ip_range: None,
            range_start: None,
            range_end: None,
        })
        .collect();
    let attach = AttachRequest {
        container,
        netns: netns.clone(),
        network: request.name.clone(),
        ifname: ifname.clone(),
        ips: requested_ips(&conf, env)?,
        mac: requested_mac(&conf, env)?,
        ports: port_specs(&conf)?,
        aliases: Vec::new(),
        bandwidth: bandwidth(&conf)?,
        labels: BTreeMap::from([(FRONTEND.0.to_string(), FRONTEND.1.to_string())]),
    };
    // One transaction: a refused attachment leaves no new network behind.
    let accept = |net: &rete::model::Network| {
        let have: Vec<_> = net.subnets.iter().map(|s| s.subnet).collect();
        if wanted.iter().any(|w| !have.contains(&w.subnet)) {
            return Err(Error::Invalid(format!(
                "network \"{}\" exists with subnets {}, not those of this configuration; use another name or remove the network",
                net.name,
                have.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(())
    };
    let (net, ep) = engine
        .ensure_and_attach(request, accept, attach)
        .map_err(engine_error)?;

    let gateway_of = |ip: IpAddr| {
        net.subnets
            .iter()
            .find(|s| s.subnet.contains(&ip))
            .map(|s| s.gateway.to_string())
    };
    let result = CniResult {
        interfaces: vec![
            Interface {
                name: net.bridge.clone(),
                mac: None,
                sandbox: None,
                mtu: net.mtu,
            },
            Interface {
                name: ep.host_ifname.clone(),
                mac: None,
                sandbox: None,
                mtu: net.mtu,
            },
            Interface {
                name: ep.ifname.clone(),
                mac: Some(ep.mac.clone()),
                sandbox: Some(netns.display().to_string()),
                mtu: net.mtu,
            },
        ]
        .into_iter()
        .chain(ep.ifb().map(|name| Interface {
            name,
            mac: None,
            sandbox: None,
            mtu: net.mtu,
        }))
        .collect(),
        ips: ep
            .addresses
            .iter()
            .map(|a| IpConfig {
                address: a.to_string(),
                gateway: gateway_of(a.addr()),
                interface: Some(2),
            })
            .collect(),
        routes: ep
            .gateways
            .iter()
            .map(|g| Route {
                dst: if g.is_ipv4() { "0.0.0.0/0" } else { "::/0" }.into(),
                gw: Some(g.to_string()),
            })
            .chain(
                net.routes
                    .iter()
                    .filter(|r| r.applies_to(&ep.addresses))
                    .map(|r| Route {
                        dst: r.destination.to_string(),
                        gw: Some(r.gateway.to_string()),
                    }),
            )
            .collect(),
        dns: dns(&conf).map(|mut d| {
            // rete's resolver answers on the gateways of DNS-enabled networks.
            if net.dns && d.nameservers.is_empty() {
                d.nameservers = net.subnets.iter().map(|s| s.gateway.to_string()).collect();
                d.search = vec![rete::dns::zone::DOMAINS[0].to_string()];
            }
            d
        }),
    };
    let out = result.to_json(version);
    match &conf.prev_result {
        Some(prev) => wire::merge(prev, out, version).map_err(|m| CniError::new(code::DECODE, m)),
        None => Ok(out),
    }
}

fn unsupported(field: &str, value: &str, why: &str) -> CniError {
    CniError::new(
        code::UNSUPPORTED_FIELD,
        format!("unsupported field {field}={value}: {why}"),
    )
}

fn is_default(dst: &str) -> bool {
    matches!(dst, "0.0.0.0/0" | "::/0")
}

/// The rete network a configuration describes.
fn network_request(conf: &NetConf) -> Result<NetworkRequest, CniError> {
    let mut subnets = Vec::new();
    for set in range_sets(conf)? {
        let first = set.into_iter().next().expect("range sets are not empty");
        subnets.push(SubnetRequest {
            subnet: first.subnet,
            gateway: Some(first.gateway),
            ip_range: first.ip_range,
            range_start: first.range_start,
            range_end: first.range_end,
        });
    }
    let mut options = BTreeMap::new();
    options.insert("isolate".into(), conf.isolate.unwrap_or(true).to_string());
    options.insert(
        "masquerade".into(),
        conf.ip_masq.unwrap_or(true).to_string(),
    );
    options.insert(
        "fastpath".into(),
        conf.fastpath.unwrap_or(false).to_string(),
    );
    let routes = conf
        .ipam
        .iter()
        .flat_map(|i| &i.routes)
        .filter(|r| !is_default(&r.dst))
        .map(|r| static_route(r, &subnets))
        .collect::<Result<_, _>>()?;
    Ok(NetworkRequest {
        driver: rete::model::Driver::Bridge,
        name: conf.name.clone(),
        subnets,
        internal: conf.internal.unwrap_or(false),
        mtu: conf.mtu,
        bridge: conf.bridge.clone(),
        labels: BTreeMap::from([(FRONTEND.0.to_string(), FRONTEND.1.to_string())]),
        options,
        disable_dns: conf.disable_dns.unwrap_or(false),
        direct: Vec::new(),
        routes,
        no_default_route: false,
        metric: None,
    })
}

/// An `ipam.routes` entry other than a default route. Without `gw` it goes
/// via the gateway of the configuration's range of its family, as the
/// reference IPAM plugins mean it.
fn static_route(r: &wire::Route, subnets: &[SubnetRequest]) -> Result<StaticRoute, CniError> {
    let invalid = |m: String| CniError::new(code::INVALID_CONFIG, format!("ipam.routes: {m}"));
    let destination = rete::model::route_destination(&r.dst).map_err(invalid)?;
    let gateway = match &r.gw {
        Some(gw) => gw
            .parse::<IpAddr>()
            .map_err(|_| invalid(format!("gw \"{gw}\" of {} is not an IP address", r.dst)))?,
        None => subnets
            .iter()
            .find(|s| s.subnet.addr().is_ipv4() == destination.addr().is_ipv4())
            .and_then(|s| s.gateway)
            .ok_or_else(|| {
                invalid(format!(
                    "route to {} has no gw and no range of its family to take the gateway of",
                    r.dst
                ))
            })?,
    };
    Ok(StaticRoute {
        destination,
        gateway,
        metric: None,
    })
}

/// The address ranges of a configuration, as sets of alternatives (one set
/// per address family): runtimeConfig.ipRanges, else ipam.ranges, else the
/// single ipam.subnet form.
pub fn range_sets(conf: &NetConf) -> Result<Vec<Vec<Subnet>>, CniError> {
    let ipam = conf.ipam.clone().unwrap_or_default();
    let sets: Vec<Vec<wire::Range>> = if !conf.runtime_config.ip_ranges.is_empty() {
        conf.runtime_config.ip_ranges.clone()
    } else if !ipam.ranges.is_empty() {
        ipam.ranges.clone()
    } else if let Some(subnet) = &ipam.subnet {
        vec![vec![wire::Range {
            subnet: subnet.clone(),
            range_start: ipam.range_start.clone(),
            range_end: ipam.range_end.clone(),
            gateway: ipam.gateway.clone(),
        }]]
    } else {
        Vec::new()
    };
    sets.into_iter()
        .filter(|s| !s.is_empty())
        .map(|set| set.iter().map(subnet_of).collect())
        .collect()
}

fn subnet_of(r: &wire::Range) -> Result<Subnet, CniError> {
    let bad = |what: &str, v: &str| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("ipam range {what} \"{v}\" is not valid"),
        )
    };
    let subnet =
        rete::ipam::parse_subnet(&r.subnet).map_err(|m| CniError::new(code::INVALID_CONFIG, m))?;
    let ip = |v: &Option<String>, what: &str| -> Result<Option<IpAddr>, CniError> {
        v.as_deref()
            .map(|s| s.parse().map_err(|_| bad(what, s)))
            .transpose()
    };
    let s = Subnet {
        subnet,
        gateway: ip(&r.gateway, "gateway")?.unwrap_or_else(|| rete::ipam::first_host(&subnet)),
        ip_range: None,
        range_start: ip(&r.range_start, "rangeStart")?,
        range_end: ip(&r.range_end, "rangeEnd")?,
    };
    rete::ipam::check_subnet(&s).map_err(|m| CniError::new(code::INVALID_CONFIG, m))?;
    Ok(s)
}

/// Addresses asked for through the `ips` capability or CNI_ARGS IP=.
pub fn requested_ips(conf: &NetConf, env: &Env) -> Result<Vec<IpAddr>, CniError> {
    let mut out = Vec::new();
    let from_args = env
        .args
        .get("IP")
        .map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>());
    for s in conf
        .runtime_config
        .ips
        .iter()
        .cloned()
        .chain(from_args.unwrap_or_default())
    {
        let addr = s.split('/').next().unwrap_or_default();
        out.push(addr.parse().map_err(|_| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("requested address \"{s}\" is not an IP address"),
            )
        })?);
    }
    Ok(out)
}

fn requested_mac(conf: &NetConf, env: &Env) -> Result<Option<[u8; 6]>, CniError> {
    conf.runtime_config
        .mac
        .as_deref()
        .or(env.args.get("MAC").map(String::as_str))
        .map(|m| {
            rete::names::parse_mac(m)
                .map_err(|e| CniError::new(code::INVALID_CONFIG, e.to_string()))
        })
        .transpose()
}

/// The limits asked for: the `bandwidth` capability, else the
/// configuration's own fields. A rate needs its burst and the other way
/// round, as in the reference bandwidth plugin.
fn bandwidth(conf: &NetConf) -> Result<Option<Bandwidth>, CniError> {
    let b = conf.runtime_config.bandwidth.unwrap_or(conf.bandwidth);
    let limit = |rate: u64, burst: u64, what: &str| match (rate, burst) {
        (0, 0) => Ok(None),
        (0, _) | (_, 0) => Err(CniError::new(
            code::INVALID_CONFIG,
            format!("bandwidth: {what}Rate and {what}Burst go together; give both or neither"),
        )),
        (rate, burst) => Ok(Some(Limit { rate, burst })),
    };
    let ingress = limit(b.ingress_rate, b.ingress_burst, "ingress")?;
    let egress = limit(b.egress_rate, b.egress_burst, "egress")?;
    Ok((ingress.is_some() || egress.is_some()).then_some(Bandwidth { ingress, egress }))
}

fn port_specs(conf: &NetConf) -> Result<Vec<PortSpec>, CniError> {
    conf.runtime_config
        .port_mappings
        .iter()
        .map(|p| {
            let bad = |m: String| CniError::new(code::INVALID_CONFIG, format!("portMappings: {m}"));
            let protocol: Protocol = p.protocol.to_lowercase().parse().map_err(bad)?;
            if p.host_port == 0 || p.container_port == 0 {
                return Err(bad("hostPort and containerPort must be 1-65535".into()));
            }
            let host_ip = match p.host_ip.as_deref() {
                None | Some("") => None,
                Some(ip) => Some(
                    ip.parse()
                        .map_err(|_| bad(format!("hostIP \"{ip}\" is not an IP address")))?,
                ),
            };
            let one = |port| PortRange {
                start: port,
                end: port,
            };
            Ok(PortSpec {
                host_ip,
                host_ports: Some(one(p.host_port)),
                container_ports: one(p.container_port),
                protocol,
            })
        })
        .collect()
}

/// The configuration's DNS settings with the `dns` capability's on top.
pub fn dns(conf: &NetConf) -> Option<wire::Dns> {
    let mut d = conf.dns.clone().unwrap_or_default();
    if let Some(rt) = &conf.runtime_config.dns {
        if !rt.servers.is_empty() {
            d.nameservers = rt.servers.clone();
        }
        if !rt.searches.is_empty() {
            d.search = rt.searches.clone();
        }
        if !rt.options.is_empty() {
            d.options = rt.options.clone();
        }
    }
    Some(d)
}
