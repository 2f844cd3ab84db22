//! The engine's model: networks, containers, their endpoints and port
//! mappings. Frontends translate their protocol's types into these.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A network. A bridge network is a Linux bridge holding the gateway
/// address(es), with containers plugged in through veth pairs; a macvlan
/// network puts containers straight on the link of a host device, each with
/// a MAC address of its own, reached at their own addresses without NAT.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Network {
    pub name: String,
    pub id: String,
    #[serde(default)]
    pub driver: Driver,
    /// The bridge device's name; for a macvlan network, the parent device
    /// the containers' interfaces hang off (rete neither makes nor removes
    /// it).
    pub bridge: String,
    pub subnets: Vec<Subnet>,
    /// No route out and no masquerade: containers reach only their bridge.
    pub internal: bool,
    /// Routed traffic to and from other rete networks is dropped.
    pub isolate: bool,
    /// Traffic leaving the host is masqueraded (unless internal).
    #[serde(default = "yes")]
    pub masquerade: bool,
    /// Containers on this network find each other by name through rete's
    /// resolver, served on the gateway addresses.
    #[serde(default = "yes")]
    pub dns: bool,
    pub mtu: Option<u32>,
    /// IPv4 GSO and GRO size limit of the network's veths when above
    /// 64 KiB (BIG TCP): fewer, larger packets between its containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gso_max_size: Option<u32>,
    /// Destinations reached without masquerade (a cluster's container
    /// range: traffic between container subnets keeps its addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub direct: Vec<IpNet>,
    /// Routes every container gets through this network besides its
    /// default route (Podman's `--route`, CNI's `ipam.routes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<StaticRoute>,
    /// Containers get no default route through this network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_default_route: bool,
    /// The metric of the default route through this network. With one,
    /// every network's default route is installed and the lowest metric
    /// wins; without, a container's first network gives its default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Seconds since the epoch.
    pub created: u64,
}

fn yes() -> bool {
    true
}

/// How a network's containers are plugged in.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    #[default]
    Bridge,
    Macvlan,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Bridge => "bridge",
            Driver::Macvlan => "macvlan",
        })
    }
}

/// How macvlan interfaces on one parent may reach each other (the kernel's
/// macvlan modes).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    /// Directly, inside the host.
    #[default]
    Bridge,
    /// Not at all.
    Private,
    /// Only through the switch the parent is plugged into (it must send
    /// frames back out of the port they came in on).
    Vepa,
    /// One interface takes the parent over, its MAC address included.
    Passthru,
}

impl FromStr for MacvlanMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "bridge" | "" => MacvlanMode::Bridge,
            "private" => MacvlanMode::Private,
            "vepa" => MacvlanMode::Vepa,
            "passthru" => MacvlanMode::Passthru,
            _ => {
                return Err(format!(
                    "unknown macvlan mode \"{s}\"; use bridge, private, vepa or passthru"
                ))
            }
        })
    }
}

impl fmt::Display for MacvlanMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Passthru => "passthru",
        })
    }
}

impl Network {
    /// The macvlan mode its options name (bridge when they name none).
    pub fn macvlan_mode(&self) -> MacvlanMode {
        self.options
            .get("mode")
            .and_then(|m| m.parse().ok())
            .unwrap_or_default()
    }

    /// Whether traffic between its containers takes the shortcut past the
    /// bridge (`crate::fastpath`); on unless the option `fastpath=false`.
    pub fn fastpath(&self) -> bool {
        self.driver == Driver::Bridge
            && self.options.get("fastpath").map(String::as_str) != Some("false")
    }
}

/// One subnet of a network, with its gateway and the range leases come from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Subnet {
    pub subnet: IpNet,
    pub gateway: IpAddr,
    /// Automatic leases come from this range; explicit addresses may lie
    /// anywhere in the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<IpNet>,
    /// First and last address automatic leases may take (CNI's
    /// rangeStart/rangeEnd), narrowing `ip_range`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<IpAddr>,
}

/// A route a network gives its containers: `destination` via `gateway`, an
/// address on one of the network's subnets (the host's bridge or a
/// container acting as a router).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StaticRoute {
    pub destination: IpNet,
    pub gateway: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

impl StaticRoute {
    /// Whether an endpoint with `addresses` takes this route: its gateway
    /// is on one of their subnets and is not one of them (a container is
    /// not routed through itself: it is the router the route points at).
    pub fn applies_to(&self, addresses: &[IpNet]) -> bool {
        addresses.iter().any(|a| a.contains(&self.gateway))
            && !addresses.iter().any(|a| a.addr() == self.gateway)
    }
}

impl fmt::Display for StaticRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {}", self.destination, self.gateway)?;
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        Ok(())
    }
}

impl FromStr for StaticRoute {
    type Err = String;

    /// Podman's form: `DESTINATION,GATEWAY[,METRIC]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || {
            format!("invalid route \"{s}\": use DESTINATION/PREFIX,GATEWAY[,METRIC], e.g. 10.9.0.0/16,10.1.0.5")
        };
        let mut parts = s.split(',').map(str::trim);
        let (Some(dst), Some(gw)) = (parts.next(), parts.next()) else {
            return Err(usage());
        };
        let metric =
            match parts.next() {
                None => None,
                Some(m) => Some(m.parse::<u32>().map_err(|_| {
                    format!("invalid route \"{s}\": metric \"{m}\" is not a number")
                })?),
            };
        if parts.next().is_some() {
            return Err(usage());
        }
        let destination =
            route_destination(dst).map_err(|e| format!("invalid route \"{s}\": {e}"))?;
        let gateway = gw
            .parse::<IpAddr>()
            .map_err(|_| format!("invalid route \"{s}\": gateway \"{gw}\" is not an IP address"))?;
        Ok(StaticRoute {
            destination,
            gateway,
            metric,
        })
    }
}

/// A route's destination: a CIDR without host bits (a /32 or /128 names one
/// host).
pub fn route_destination(s: &str) -> Result<IpNet, String> {
    crate::ipam::parse_prefix(s, "destination", "10.9.0.0/16")
}

/// How a container is networked: the seeds' four archetypes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase", tag = "mode", content = "of")]
pub enum Mode {
    /// Own namespace, loopback only.
    None,
    /// The host's namespace.
    Host,
    /// Own namespace, attached to one or more bridge networks.
    Bridge,
    /// Another container's namespace (the pod model).
    Container(String),
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::None => f.write_str("none"),
            Mode::Host => f.write_str("host"),
            Mode::Bridge => f.write_str("bridge"),
            Mode::Container(c) => write!(f, "container:{c}"),
        }
    }
}

/// A container: a network namespace and what rete attached to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Container {
    pub name: String,
    pub id: String,
    pub mode: Mode,
    /// The namespace's path; `None` for host mode.
    pub netns: Option<PathBuf>,
    /// Whether rete created (and so removes) the namespace.
    pub owns_netns: bool,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Processes started by `rete run -d`, ended by `rete rm`.
    #[serde(default)]
    pub processes: Vec<Process>,
    pub created: u64,
}

/// A process rete started, identified by pid and start time so that a reused
/// pid is never signalled.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Process {
    pub pid: i32,
    pub start_time: u64,
}

/// A container's attachment to one network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub network: String,
    /// The interface inside the container (eth0, eth1, ...).
    pub ifname: String,
    /// The host end of the veth pair, a port of the network's bridge; empty
    /// for a macvlan endpoint, which has no host end.
    #[serde(default)]
    pub host_ifname: String,
    pub mac: String,
    /// Addresses with their subnet's prefix length.
    pub addresses: Vec<IpNet>,
    pub gateways: Vec<IpAddr>,
    /// Further names the container answers to on this network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Rate limits on the container's traffic through this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
}

/// The prefix of the host-side veth ends rete creates.
pub const VETH_PREFIX: &str = "rete-";

/// The prefix of the ifb devices rete creates for egress limits.
pub const IFB_PREFIX: &str = "rbw-";

impl Endpoint {
    /// The host end of its veth pair, if it has one (a macvlan endpoint
    /// does not).
    pub fn host_end(&self) -> Option<&str> {
        Some(self.host_ifname.as_str()).filter(|n| !n.is_empty())
    }

    /// The ifb device that carries the endpoint's egress limit, if it has
    /// one, named after its host veth (`rete-X` -> `rbw-X`, 14 bytes).
    pub fn ifb(&self) -> Option<String> {
        self.bandwidth.and_then(|b| b.egress)?;
        let suffix = self
            .host_ifname
            .strip_prefix(VETH_PREFIX)
            .unwrap_or(&self.host_ifname);
        let mut name = format!("{IFB_PREFIX}{suffix}");
        name.truncate(15);
        Some(name)
    }
}

/// A rate limit: bits per second and burst in bits (as CNI's bandwidth
/// capability gives them).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Limit {
    pub rate: u64,
    pub burst: u64,
}

/// Limits on what a container receives (ingress) and sends (egress).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bandwidth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Limit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Limit>,
}

/// Transport protocols that can be published.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            other => Err(format!(
                "unknown protocol \"{other}\": use tcp, udp or sctp"
            )),
        }
    }
}

/// One published port, resolved: a host address (unspecified = all of that
/// family), host port, protocol, and the container port it leads to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortMapping {
    /// Docker's `docker port` form: `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.host_ip {
            IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        };
        write!(
            f,
            "{}/{} -> {}:{}",
            self.container_port, self.protocol, host, self.host_port
        )
    }
}

/// A persistent tap device plugged into a network's bridge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tap {
    pub name: String,
    pub network: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_routes_parse_in_podmans_form() {
        let r: StaticRoute = "10.9.0.0/16,10.1.0.5,40".parse().unwrap();
        assert_eq!(r.to_string(), "10.9.0.0/16 via 10.1.0.5 metric 40");
        let r: StaticRoute = "fd00:9::/64, fd00:1::5".parse().unwrap();
        assert_eq!(r.metric, None);
        assert_eq!(r.gateway, "fd00:1::5".parse::<IpAddr>().unwrap());
        assert!("10.9.0.0/16".parse::<StaticRoute>().is_err());
        assert!("10.9.0.0/16,10.1.0.5,1,2".parse::<StaticRoute>().is_err());
        assert!("10.9.0.0/16,ten"
            .parse::<StaticRoute>()
            .unwrap_err()
            .contains("gateway \"ten\""));
        assert!("10.9.0.1/16,10.1.0.5"
            .parse::<StaticRoute>()
            .unwrap_err()
            .contains("did you mean 10.9.0.0/16"));
        assert!("10.9.0.0/16,10.1.0.5,-1"
            .parse::<StaticRoute>()
            .unwrap_err()
            .contains("metric \"-1\""));
    }

    #[test]
    fn a_route_applies_on_its_gateways_subnet_but_not_to_the_gateway() {
        let r: StaticRoute = "10.9.0.0/16,10.1.0.5".parse().unwrap();
        let on = |a: &str| r.applies_to(&[a.parse().unwrap()]);
        assert!(on("10.1.0.7/24"));
        assert!(!on("10.2.0.7/24"), "another subnet");
        assert!(!on("10.1.0.5/24"), "the router itself");
    }
}
