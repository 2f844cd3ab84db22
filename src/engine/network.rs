//! Networks: create, remove, prune, connect and disconnect.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::kernel::{network_elements, Kernel};
use super::{container, Engine};
use crate::error::{Error, Result};
use crate::ipam;
use crate::journal::{Journal, Undo};
use crate::model::{Driver, MacvlanMode, Network, StaticRoute, Subnet};
use crate::names;
use crate::store::Db;
use crate::sysctl;

/// The network containers join when none is named, made on first use (the
/// counterpart of Docker's `bridge`/docker0).
pub const DEFAULT_NETWORK: &str = "rete";

/// What `network create` asks for, parsed but not yet validated against the
/// host and the store.
#[derive(Debug, Clone, Default)]
pub struct NetworkRequest {
    pub name: String,
    pub driver: Driver,
    pub subnets: Vec<SubnetRequest>,
    pub internal: bool,
    pub mtu: Option<u32>,
    pub bridge: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// No name resolution on this network.
    pub disable_dns: bool,
    /// Destinations reached without masquerade.
    pub direct: Vec<IpNet>,
    /// Routes for every container besides its default route.
    pub routes: Vec<StaticRoute>,
    /// No default route through this network.
    pub no_default_route: bool,
    /// The default route's metric.
    pub metric: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct SubnetRequest {
    pub subnet: IpNet,
    pub gateway: Option<IpAddr>,
    pub ip_range: Option<IpNet>,
    pub range_start: Option<IpAddr>,
    pub range_end: Option<IpAddr>,
}

pub(super) fn get(db: &Db, name: &str) -> Result<Network> {
    db.network(name)?.ok_or_else(|| {
        Error::NotFound(format!(
            "network \"{name}\" not found; see `rete network ls`"
        ))
    })
}

impl Engine {
    /// Creates a network: its bridge with the gateway addresses, forwarding,
    /// and its firewall elements.
    pub fn create_network(&mut self, req: NetworkRequest) -> Result<Network> {
        let net = self.transact(|db, kernel, journal| create(db, kernel, journal, req))?;
        self.start_resolver_if_needed();
        Ok(net)
    }

    /// Removes networks; refused while containers are attached unless
    /// `force`, which detaches them first.
    pub fn remove_network(&mut self, name: &str, force: bool) -> Result<()> {
        self.transact(|db, kernel, journal| remove(db, kernel, journal, name, force))
    }

    /// Whether a container is attached to the network, by one indexed
    /// lookup: false may also mean "not sure" (a lease holder that is an
    /// IPAM pool's, not the network's), which `remove_network` settles.
    pub fn network_in_use(&self, name: &str) -> Result<bool> {
        let db = self.store.read();
        let Some(owner) = db.any_lease_owner(name)? else {
            return Ok(false);
        };
        Ok(db
            .container(&owner)?
            .is_some_and(|c| c.endpoints.iter().any(|e| e.network == name)))
    }

    /// Removes every network no container uses, except the default one.
    /// Returns the names removed.
    pub fn prune_networks(&mut self) -> Result<Vec<String>> {
        self.transact(|db, kernel, journal| {
            let mut removed = Vec::new();
            for n in db.networks()? {
                if n.name != DEFAULT_NETWORK && users(db, &n.name)?.is_empty() {
                    remove(db, kernel, journal, &n.name, false)?;
                    removed.push(n.name);
                }
            }
            Ok(removed)
        })
    }
}

/// Containers and taps attached to a network.
pub(super) fn users(db: &Db, network: &str) -> Result<Vec<String>> {
    let mut names = db.attached_to(network)?;
    names.extend(
        db.taps()?
            .into_iter()
            .filter(|t| t.network == network)
            .map(|t| format!("tap {}", t.name)),
    );
    Ok(names)
}

pub(super) fn create(
    db: &Db,
    kernel: &mut Kernel,
    journal: &mut Journal,
    req: NetworkRequest,
) -> Result<Network> {
    names::check_name("network", &req.name)?;
    if matches!(req.name.as_str(), "none" | "host") || req.name.starts_with("container:") {
        return Err(Error::Invalid(format!(
            "network name \"{}\" is reserved for a network mode",
            req.name
        )));
    }
    if db.network(&req.name)?.is_some() {
        return Err(Error::Conflict(format!(
            "network \"{}\" already exists; remove it with `rete network rm {}` or choose another name",
            req.name, req.name
        )));
    }
    if let Some(mtu) = req.mtu {
        if !(68..=65535).contains(&mtu) {
            return Err(Error::Invalid(format!(
                "invalid MTU {mtu}: use a value between 68 and 65535"
            )));
        }
    }
    let others = db.networks()?;
    let host = kernel.host()?;
    let settings = match req.driver {
        Driver::Bridge => bridge_settings(&req, host, &others)?,
        Driver::Macvlan => macvlan_settings(&req, host, &others)?,
    };

    let subnets = if req.subnets.is_empty() {
        let mut taken: Vec<IpNet> = others
            .iter()
            .flat_map(|n| n.subnets.iter().map(|s| s.subnet))
            .collect();
        taken.extend(
            host.route_destinations()
                .map_err(|e| Error::kernel("list routes", e))?,
        );
        let pool = ipam::DEFAULT_POOL.parse().expect("valid pool");
        let subnet = ipam::free_subnet(pool, &taken).ok_or_else(|| {
            Error::Exhausted(format!(
                "no free /24 left in the default pool {}; pass --subnet",
                ipam::DEFAULT_POOL
            ))
        })?;
        vec![Subnet {
            subnet,
            gateway: ipam::first_host(&subnet),
            ip_range: None,
            range_start: None,
            range_end: None,
        }]
    } else {
        let mut out: Vec<Subnet> = Vec::new();
        for s in &req.subnets {
            if let Some(prev) = out.iter().find(|p| ipam::overlaps(&p.subnet, &s.subnet)) {
                return Err(Error::Invalid(format!(
                    "subnets {} and {} overlap",
                    prev.subnet, s.subnet
                )));
            }
            for n in &others {
                if let Some(p) = n
                    .subnets
                    .iter()
                    .find(|p| ipam::overlaps(&p.subnet, &s.subnet))
                {
                    return Err(Error::Conflict(format!(
                        "subnet {} overlaps {} of network \"{}\"; choose another --subnet",
                        s.subnet, p.subnet, n.name
                    )));
                }
            }
            let subnet = Subnet {
                subnet: s.subnet,
                gateway: s.gateway.unwrap_or_else(|| ipam::first_host(&s.subnet)),
                ip_range: s.ip_range,
                range_start: s.range_start,
                range_end: s.range_end,
            };
            ipam::check_subnet(&subnet).map_err(Error::Invalid)?;
            out.push(subnet);
        }
        out
    };
    check_routes(&req, &subnets.iter().map(|s| s.subnet).collect::<Vec<_>>())?;

    let net = Network {
        name: req.name,
        id: random_id(),
        driver: req.driver,
        bridge: settings.device,
        subnets,
        internal: req.internal,
        isolate: settings.isolate,
        masquerade: settings.masquerade,
        // The resolver answers on the gateway, an address of the host's
        // bridge; a macvlan network's gateway is a router outside.
        dns: !req.disable_dns && req.driver == Driver::Bridge,
        mtu: req.mtu,
        gso_max_size: settings.gso_max_size,
        direct: req.direct,
        routes: req.routes,
        no_default_route: req.no_default_route,
        metric: req.metric,
        labels: req.labels,
        options: settings.options,
        created: now(),
    };
    db.put_network(&net)?;
    if net.driver == Driver::Macvlan {
        // Nothing of the host changes: the parent is the host's own, and
        // the network's interfaces are made with its containers.
        return Ok(net);
    }

    journal.record(Undo::Link(net.bridge.clone()))?;
    build_bridge(kernel, &net)?;
    let elements = network_elements(&net);
    journal.record(Undo::Elements(elements.clone()))?;
    kernel.firewall_add(db, &elements)?;
    Ok(net)
}

/// The route options every driver takes, `no_default_route` and `metric`
/// (of the default route; 0, the kernel's own IPv4 default, is none), as
/// Podman writes them.
pub fn route_options(options: &BTreeMap<String, String>) -> Result<(bool, Option<u32>)> {
    let no_default_route = match options.get("no_default_route").map(String::as_str) {
        None | Some("false" | "0" | "") => false,
        Some("true" | "1") => true,
        Some(v) => {
            return Err(Error::Invalid(format!(
                "invalid option no_default_route={v}: use true or false"
            )))
        }
    };
    let metric = match options.get("metric") {
        None => None,
        Some(v) => Some(
            v.parse::<u32>()
                .map_err(|_| Error::Invalid(format!("invalid option metric={v}: not a number")))?,
        ),
    };
    Ok((no_default_route, metric.filter(|&m| m != 0)))
}

/// A network's static routes must be reachable from its containers: each
/// gateway on one of its subnets, of its destination's family, not a
/// subnet's network or broadcast address; no destination twice at one
/// metric, and no default route beside the network's own.
pub fn check_routes(req: &NetworkRequest, subnets: &[IpNet]) -> Result<()> {
    let list = || {
        subnets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, r) in req.routes.iter().enumerate() {
        if r.destination.addr().is_ipv4() != r.gateway.is_ipv4() {
            return Err(Error::Invalid(format!(
                "route {r}: the gateway and the destination are of different IP families"
            )));
        }
        let Some(s) = subnets.iter().find(|s| s.contains(&r.gateway)) else {
            return Err(Error::Invalid(format!(
                "route {r}: gateway {} is not on a subnet of network \"{}\" ({}); a container reaches a gateway only on its own subnet",
                r.gateway,
                req.name,
                list()
            )));
        };
        if ipam::is_reserved(s, r.gateway) {
            return Err(Error::Invalid(format!(
                "route {r}: gateway {} is the network or broadcast address of {s}",
                r.gateway
            )));
        }
        if r.destination.prefix_len() == 0 && !req.internal && !req.no_default_route {
            return Err(Error::Invalid(format!(
                "route {r} would be a second default route beside the network's own; add --opt no_default_route=true to route by it instead"
            )));
        }
        if req.routes[..i]
            .iter()
            .any(|p| p.destination == r.destination && p.metric == r.metric)
        {
            return Err(Error::Invalid(format!(
                "route to {} is given twice; give one destination once, or each with its own metric",
                r.destination
            )));
        }
    }
    Ok(())
}

/// What a network request's driver makes of its options and device.
struct Settings {
    /// The bridge, or the macvlan parent.
    device: String,
    isolate: bool,
    masquerade: bool,
    /// IPv4 GSO/GRO size of the network's veths, when above 64 KiB.
    gso_max_size: Option<u32>,
    options: BTreeMap<String, String>,
}

/// A bridge network's options (`isolate`, `masquerade`, both on unless
/// turned off) and its bridge: the one named, which must be new, or the
/// first free `reteN`.
fn bridge_settings(
    req: &NetworkRequest,
    host: &mut crate::netlink::Rtnl,
    others: &[Network],
) -> Result<Settings> {
    let mut isolate = true;
    let mut masquerade = true;
    let mut gso_max_size = None;
    for (k, v) in &req.options {
        let flag = || match v.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(Error::Invalid(format!(
                "invalid option {k}={v}: use true or false"
            ))),
        };
        match k.as_str() {
            "isolate" => isolate = flag()?,
            "masquerade" => masquerade = flag()?,
            "gso_max_size" => gso_max_size = Some(parse_gso_max_size(v)?),
            // Read from the stored options when containers attach.
            "fastpath" => drop(flag()?),
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown network option \"{k}\"; known: isolate, masquerade, fastpath, gso_max_size (bridge), parent, mode (macvlan)"
                )))
            }
        }
    }
    let gso_max_size = match gso_max_size {
        Some(size) => (size > LEGACY_GSO_MAX_SIZE).then_some(size),
        // A cluster network's traffic between hosts leaves through the
        // overlay or the underlay, whose limits are the agent's business.
        None if !req.direct.is_empty() => None,
        None => uplink_gso_max_size(host)?,
    };
    let device = match &req.bridge {
        Some(b) => {
            names::check_ifname(b)?;
            if let Some(n) = others
                .iter()
                .find(|n| n.driver == Driver::Bridge && &n.bridge == b)
            {
                return Err(Error::Conflict(format!(
                    "bridge \"{b}\" already belongs to network \"{}\"",
                    n.name
                )));
            }
            if host
                .link(b)
                .map_err(|e| Error::kernel("list links", e))?
                .is_some()
            {
                return Err(Error::Conflict(format!(
                    "a device named \"{b}\" already exists on the host; choose another --interface"
                )));
            }
            b.clone()
        }
        None => free_bridge_name(host, others)?,
    };
    Ok(Settings {
        device,
        isolate,
        masquerade,
        gso_max_size,
        options: req.options.clone(),
    })
}

/// The largest GSO packet every device takes without BIG TCP.
const LEGACY_GSO_MAX_SIZE: u32 = 65536;
/// The largest a veth takes (its `tso_max_size`).
const VETH_GSO_MAX_SIZE: u32 = 524280;

fn parse_gso_max_size(v: &str) -> Result<u32> {
    v.parse::<u32>()
        .ok()
        .filter(|n| (LEGACY_GSO_MAX_SIZE..=VETH_GSO_MAX_SIZE).contains(n))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "invalid option gso_max_size={v}: use a size in bytes from {LEGACY_GSO_MAX_SIZE} (no BIG TCP) \
                 to {VETH_GSO_MAX_SIZE}"
            ))
        })
}

/// BIG TCP for a new network's veths when the host's uplink (the device of
/// its IPv4 default route) carries IPv4 GSO packets above 64 KiB: then the
/// network's containers send packets of up to the uplink's size, which
/// cross the bridge and leave the host whole. With a 64 KiB uplink they
/// would be cut into MTU-sized segments in software on the way out, which
/// costs egress more than BIG TCP gains between containers, so it stays
/// off (`--opt gso_max_size=N` sets it regardless).
fn uplink_gso_max_size(host: &mut crate::netlink::Rtnl) -> Result<Option<u32>> {
    let uplink = host
        .default_route_link()
        .map_err(|e| Error::kernel("read the default route", e))?;
    Ok(uplink
        .and_then(|l| l.gso_ipv4_max_size)
        .filter(|&n| n > LEGACY_GSO_MAX_SIZE)
        .map(|n| n.min(VETH_GSO_MAX_SIZE)))
}

/// A macvlan network's parent (option `parent`, else the device of the
/// host's default route) and mode (option `mode`, or Docker's
/// `macvlan_mode`). Isolation and masquerade do not apply: its containers
/// are on the parent's link, not behind the host.
fn macvlan_settings(
    req: &NetworkRequest,
    host: &mut crate::netlink::Rtnl,
    others: &[Network],
) -> Result<Settings> {
    let mut parent = None;
    let mut mode = MacvlanMode::default();
    for (k, v) in &req.options {
        match k.as_str() {
            "parent" => parent = Some(v.clone()),
            "mode" | "macvlan_mode" => mode = v.parse().map_err(Error::Invalid)?,
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown macvlan network option \"{k}\"; known: parent, mode"
                )))
            }
        }
    }
    if req.bridge.is_some() {
        return Err(Error::Invalid(
            "a macvlan network has no bridge: name its parent device with --opt parent=DEVICE"
                .into(),
        ));
    }
    let parent = match parent {
        Some(p) => {
            names::check_ifname(&p)?;
            p
        }
        None => host
            .default_route_link()
            .map_err(|e| Error::kernel("list routes", e))?
            .map(|l| l.name)
            .ok_or_else(|| {
                Error::Invalid(
                    "the host has no default route to take a macvlan parent from; pass --opt parent=DEVICE"
                        .into(),
                )
            })?,
    };
    if host
        .link(&parent)
        .map_err(|e| Error::kernel("list links", e))?
        .is_none()
    {
        return Err(Error::NotFound(format!(
            "macvlan parent device \"{parent}\" does not exist on the host; name an existing device with --opt parent=DEVICE"
        )));
    }
    let rete_made = parent.starts_with(crate::model::VETH_PREFIX)
        || others
            .iter()
            .any(|n| n.driver == Driver::Bridge && n.bridge == parent);
    if rete_made {
        return Err(Error::Invalid(format!(
            "\"{parent}\" is a device rete made for a bridge network; a macvlan parent must be one of the host's own links"
        )));
    }
    if req.subnets.is_empty() {
        return Err(Error::Invalid(format!(
            "macvlan network \"{}\" needs --subnet: the subnet of the link its parent {parent} is on",
            req.name
        )));
    }
    let options = BTreeMap::from([
        ("parent".to_string(), parent.clone()),
        ("mode".to_string(), mode.to_string()),
    ]);
    Ok(Settings {
        device: parent,
        isolate: false,
        masquerade: false,
        gso_max_size: None,
        options,
    })
}

/// The kernel side of a network: the bridge, its gateway addresses and
/// forwarding.
pub(super) fn build_bridge(kernel: &mut Kernel, net: &Network) -> Result<()> {
    let host = kernel.host()?;
    host.add_bridge(&net.bridge, net.mtu)
        .map_err(|e| Error::kernel(format!("create bridge {}", net.bridge), e))?;
    let index = host
        .link(&net.bridge)
        .map_err(|e| Error::kernel("list links", e))?
        .ok_or_else(|| {
            Error::kernel(
                format!("find bridge {}", net.bridge),
                std::io::Error::from_raw_os_error(libc::ENODEV),
            )
        })?
        .index;
    for s in &net.subnets {
        host.add_addr(index, s.gateway, s.subnet.prefix_len())
            .map_err(|e| Error::kernel(format!("add {} to {}", s.gateway, net.bridge), e))?;
    }
    // Published ports answer on 127.0.0.1 only if the bridge may carry
    // loopback-sourced packets (they are masqueraded on the way out).
    sysctl::ensure_if("ipv4", &net.bridge, "route_localnet", "1")?;
    if !net.internal {
        if net.subnets.iter().any(|s| s.subnet.addr().is_ipv4()) {
            sysctl::ensure("net.ipv4.ip_forward", "1")?;
        }
        if net.subnets.iter().any(|s| s.subnet.addr().is_ipv6()) {
            sysctl::ensure("net.ipv6.conf.all.forwarding", "1")?;
        }
    }
    Ok(())
}

fn remove(
    db: &Db,
    kernel: &mut Kernel,
    journal: &mut Journal,
    name: &str,
    force: bool,
) -> Result<()> {
    let Some(net) = db.network(name)? else {
        return Err(Error::NotFound(format!(
            "network \"{name}\" not found; see `rete network ls`"
        )));
    };
    let users = users(db, name)?;
    if !users.is_empty() {
        if !force {
            return Err(Error::InUse(format!(
                "network \"{name}\" is in use by {} ({}); remove them or pass --force",
                {
                    let taps = users.iter().filter(|u| u.starts_with("tap ")).count();
                    let containers = plural(users.len() - taps, "container");
                    match taps {
                        0 => containers,
                        n if n == users.len() => plural(n, "tap"),
                        n => format!("{containers} and {}", plural(n, "tap")),
                    }
                },
                users.join(", ")
            )));
        }
        for c in db.containers()? {
            if c.endpoints.iter().any(|e| e.network == name) {
                container::detach(db, kernel, journal, &c.name, name)?;
            }
        }
        for t in db.taps()?.into_iter().filter(|t| t.network == name) {
            super::tap::remove(db, kernel, &t.name)?;
        }
    }
    // Past this point nothing is journaled: removal is idempotent, so a
    // failure is mended by running it again.
    if net.driver == Driver::Bridge {
        kernel.firewall().delete(&network_elements(&net))?;
        if net.fastpath() {
            let host = kernel.host()?;
            if let Ok(Some(bridge)) = host.link(&net.bridge) {
                let _ = crate::fastpath::unpublish_network(host, bridge.index);
            }
        }
        crate::linger::delete_link(&net.bridge)
            .map_err(|e| Error::kernel(format!("delete bridge {}", net.bridge), e))?;
    }
    db.delete_network(name)?;
    if db.networks()?.is_empty() {
        kernel.firewall().drop_table()?;
        kernel.forget_firewall();
    }
    Ok(())
}

fn free_bridge_name(host: &mut crate::netlink::Rtnl, others: &[Network]) -> Result<String> {
    let links = host.links().map_err(|e| Error::kernel("list links", e))?;
    (0..4096)
        .map(|i| format!("rete{i}"))
        .find(|b| !others.iter().any(|n| &n.bridge == b) && !links.iter().any(|l| &l.name == b))
        .ok_or_else(|| Error::Exhausted("no free bridge name rete0..rete4095".into()))
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

pub(super) fn random_id() -> String {
    let (a, b) = (crate::random::u64(), crate::random::u64());
    format!("{a:016x}{b:016x}")
}

pub(super) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
