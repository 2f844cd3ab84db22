//! Endpoints: a container's attachment to one network. Leasing addresses
//! (IPAM over the store) is apart from plumbing (the veth pair, addresses and
//! routes in the kernel), so `gc` can plumb again an endpoint whose devices
//! were lost, with the addresses it already holds.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use ipnet::IpNet;

use super::kernel::Kernel;
use super::leases;
use super::shaping;
use crate::error::{Error, Result};
use crate::ipam;
use crate::journal::{Journal, Undo};
use crate::model::{Bandwidth, Driver, Endpoint, MacvlanMode, Network, VETH_PREFIX};
use crate::names;
use crate::netlink::{MacvlanSpec, Rtnl, VethSpec};
use crate::netns;
use crate::store::Db;

/// What the caller asks of a new endpoint.
pub(super) struct EndpointRequest<'a> {
    pub net: &'a Network,
    pub ifname: String,
    pub ip4: Option<IpAddr>,
    pub ip6: Option<IpAddr>,
    pub mac: Option<[u8; 6]>,
    pub aliases: Vec<String>,
    pub bandwidth: Option<Bandwidth>,
}

/// Attaches the container to one network: leases addresses, then plumbs.
pub(super) fn attach(
    db: &Db,
    kernel: &mut Kernel,
    journal: &mut Journal,
    sandbox: (&File, &mut Rtnl),
    container: &str,
    req: EndpointRequest,
) -> Result<Endpoint> {
    let macvlan = req.net.driver == Driver::Macvlan;
    if macvlan && req.bandwidth.is_some() {
        return Err(Error::Invalid(format!(
            "network \"{}\" is a macvlan network: rete limits bandwidth on the host end of a veth pair, which it has none of",
            req.net.name
        )));
    }
    let addresses = lease(db, container, req.net, req.ip4, req.ip6)?;
    // A passthru macvlan takes its parent's MAC.
    let mac = if macvlan && req.net.macvlan_mode() == MacvlanMode::Passthru {
        None
    } else {
        req.mac.or_else(|| derived_mac(&addresses))
    };
    let mut ep = Endpoint {
        network: req.net.name.clone(),
        ifname: req.ifname,
        host_ifname: if macvlan {
            String::new()
        } else {
            format!(
                "{VETH_PREFIX}{:010x}",
                crate::random::u64() & 0xff_ffff_ffff
            )
        },
        mac: mac.map(|m| names::format_mac(&m)).unwrap_or_default(),
        addresses,
        gateways: Vec::new(),
        aliases: req.aliases,
        bandwidth: req.bandwidth,
    };
    plumb(kernel, journal, sandbox, container, req.net, &mut ep)?;
    Ok(ep)
}

/// Leases one address per subnet of the network: the requested one of its
/// family if it lies in the subnet, else the next free one.
fn lease(
    db: &Db,
    container: &str,
    net: &Network,
    ip4: Option<IpAddr>,
    ip6: Option<IpAddr>,
) -> Result<Vec<IpNet>> {
    // The routers the network's static routes point at: never handed out by
    // allocation (asked for by address, one is the router container).
    let routers: BTreeSet<IpAddr> = net.routes.iter().map(|r| r.gateway).collect();
    let mut addresses = Vec::new();
    for s in &net.subnets {
        let requested =
            if s.subnet.addr().is_ipv4() { ip4 } else { ip6 }.filter(|ip| s.subnet.contains(ip));
        let ip = match requested {
            Some(ip) => {
                let leased = db.is_leased(&net.name, ip)?;
                ipam::check_address(s, ip, leased).map_err(|why| {
                    if leased {
                        Error::Conflict(format!("{why} on network \"{}\"", net.name))
                    } else {
                        Error::Invalid(why)
                    }
                })?;
                ip
            }
            None => leases::allocate(db, &net.name, s, &routers)?.ok_or_else(|| {
                Error::Exhausted(format!(
                    "network \"{}\" has no free address left in {}; remove containers or create a network with a larger --subnet",
                    net.name,
                    s.ip_range.unwrap_or(s.subnet)
                ))
            })?,
        };
        db.add_lease(&net.name, ip, container)?;
        addresses.push(IpNet::new(ip, s.subnet.prefix_len()).expect("prefix from a subnet"));
    }
    Ok(addresses)
}

/// Builds the endpoint in the kernel: its interface inside as `ep.ifname`
/// (the peer of a veth pair whose host end is on the bridge, or a macvlan
/// interface on the parent) with `ep.addresses`, its default routes and
/// static routes. Fills in `ep.mac` and `ep.gateways`.
pub(super) fn plumb(
    kernel: &mut Kernel,
    journal: &mut Journal,
    (ns, inner): (&File, &mut Rtnl),
    container: &str,
    net: &Network,
    ep: &mut Endpoint,
) -> Result<()> {
    let exists = |e: std::io::Error, what: String| {
        if e.raw_os_error() == Some(libc::EEXIST) {
            Error::InterfaceExists(format!(
                "an interface named {} already exists in the namespace of {container}; choose another interface name",
                ep.ifname
            ))
        } else if e.raw_os_error() == Some(libc::EXFULL) {
            // The kernel's limit of ports per bridge (BR_MAX_PORTS).
            Error::Exhausted(format!(
                "network {} is full: its bridge {} has 1024 ports, the most a Linux bridge takes; attach {container} to another network",
                net.name, net.bridge
            ))
        } else {
            Error::kernel(what, e)
        }
    };
    let host = kernel.host()?;
    // The host end's index and the bridge's, once the host end has the
    // fast path's program.
    let mut fastpath_end = None;
    match net.driver {
        Driver::Bridge => {
            let bridge = host_device(host, net)?;
            journal.record(Undo::Link(ep.host_ifname.clone()))?;
            host.add_veth(&VethSpec {
                host: &ep.host_ifname,
                bridge: bridge.index,
                peer: &ep.ifname,
                peer_ns: ns.as_raw_fd(),
                peer_mac: names::parse_mac(&ep.mac).ok(),
                mtu: net.mtu,
                gso_max_size: net.gso_max_size,
            })
            .map_err(|e| exists(e, format!("create veth {} for {container}", ep.host_ifname)))?;
            // A bridge port needs no IPv6 of its own (the bridge carries the
            // network's). With it on, each port adds an ff00::/8 route to
            // the host's table, which the kernel walks whole on every later
            // link change of every port: ~0.2 ms per create at 600
            // containers (`perf record` of creates). Best effort: a host
            // without IPv6 has no such setting.
            let _ = crate::sysctl::set_if("ipv6", &ep.host_ifname, "disable_ipv6", "1");
            if net.fastpath() && ep.bandwidth.is_none() {
                fastpath_end = plug_fastpath(kernel, net, bridge.index, ep);
            }
            let host = kernel.host()?;
            // Hairpin: a container reaching its own published port through
            // the host gets its packets back on the port they came in on.
            // With br_netfilter loaded the DNAT happens at the bridge, which
            // will not send a frame out of its ingress port unless the port
            // is in hairpin mode.
            host.start_port(&ep.host_ifname).map_err(|e| {
                Error::kernel(format!("bring up bridge port {}", ep.host_ifname), e)
            })?;
        }
        Driver::Macvlan => {
            // Made inside the container's namespace, it goes with it: there
            // is nothing on the host to journal.
            let parent = host_device(host, net)?;
            host.add_macvlan(&MacvlanSpec {
                name: &ep.ifname,
                parent: parent.index,
                mode: net.macvlan_mode(),
                ns: ns.as_raw_fd(),
                mac: names::parse_mac(&ep.mac).ok(),
                mtu: net.mtu,
            })
            .map_err(|e| {
                exists(
                    e,
                    format!(
                        "create macvlan {} on {} for {container}",
                        ep.ifname, net.bridge
                    ),
                )
            })?;
        }
    }

    let ifname = ep.ifname.clone();
    let link = inner
        .link(&ifname)
        .map_err(|e| Error::kernel("list links in container", e))?
        .ok_or_else(|| {
            Error::kernel(
                format!("find {ifname} in container {container}"),
                std::io::Error::from_raw_os_error(libc::ENODEV),
            )
        })?;
    let ipv6 = net.subnets.iter().any(|s| s.subnet.addr().is_ipv6());
    inner
        .start_interface(link.index, ipv6)
        .map_err(|e| Error::kernel(format!("bring up {ifname} of {container}"), e))?;
    for a in &ep.addresses {
        inner
            .add_addr(link.index, a.addr(), a.prefix_len())
            .map_err(|e| Error::kernel(format!("add {a} to {ifname} of {container}"), e))?;
    }
    // Routes last: they need the address's subnet route to resolve the
    // gateway. Internal networks get no default route: they lead nowhere.
    ep.gateways.clear();
    if !net.internal && !net.no_default_route {
        for s in &net.subnets {
            let v4 = s.subnet.addr().is_ipv4();
            if ep.gateways.iter().any(|g| g.is_ipv4() == v4) {
                continue;
            }
            let default = if v4 {
                IpNet::V4(Default::default())
            } else {
                IpNet::V6(Default::default())
            };
            // A default route at the same metric from another of the
            // container's networks (or one of their static routes) is
            // already there: it stays, whatever the order the networks
            // were joined in. So without metrics the first network gives
            // the default route; with them every network's goes in and
            // the lowest metric wins.
            match inner.add_route(default, s.gateway, net.metric) {
                Ok(()) => ep.gateways.push(s.gateway),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => {
                    return Err(Error::kernel(
                        format!("add default route via {} in {container}", s.gateway),
                        e,
                    ))
                }
            }
        }
    }
    // Static routes. A route the container already has to that
    // destination at that metric (its own subnet's, another network's)
    // stays.
    for r in net.routes.iter().filter(|r| r.applies_to(&ep.addresses)) {
        match inner.add_route(r.destination, r.gateway, r.metric) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                return Err(Error::kernel(format!("add route {r} in {container}"), e))
            }
            _ => {}
        }
    }
    if let Some(mac) = link.mac.as_deref() {
        ep.mac = names::format_mac(mac);
    }
    if let Some(ends) = fastpath_end {
        join_fastpath(kernel, net, ends, ep);
    }
    shaping::apply(kernel, journal, ep)
}

/// Gives the endpoint's new host end (on bridge `bridge`) its network's
/// shortcut past the bridge (see `crate::fastpath`); returns the host
/// end's index and the bridge's for [`join_fastpath`]. Done while the
/// host end is still down: a qdisc added to a link that is up makes the
/// kernel wait for a grace period (dev_deactivate), ~0.3 ms. Best effort:
/// without the shortcut, the endpoint's traffic takes the bridge as
/// always. Endpoints with bandwidth limits stay off it: their tc shaping
/// is on the path the shortcut skips. IPv6-only ones too: it is IPv4's.
fn plug_fastpath(
    kernel: &mut Kernel,
    net: &Network,
    bridge: u32,
    ep: &Endpoint,
) -> Option<(u32, u32)> {
    ep.addresses
        .iter()
        .any(|a| a.addr().is_ipv4())
        .then_some(())?;
    let (host, shortcut) = kernel.shortcut(&net.bridge, Some(bridge))?;
    let host_end = host.link(&ep.host_ifname).ok()??.index;
    shortcut.plug(host, host_end).ok()?;
    Some((host_end, bridge))
}

/// Puts the endpoint, plugged by [`plug_fastpath`], on the shortcut: the
/// other containers' frames for its address and MAC go straight to it.
fn join_fastpath(
    kernel: &mut Kernel,
    net: &Network,
    (host_end, bridge): (u32, u32),
    ep: &Endpoint,
) {
    let Ok(mac) = names::parse_mac(&ep.mac) else {
        return;
    };
    let Some(IpAddr::V4(ip)) = ep.addresses.iter().map(|a| a.addr()).find(IpAddr::is_ipv4) else {
        return;
    };
    if let Some((_, shortcut)) = kernel.shortcut(&net.bridge, Some(bridge)) {
        let _ = shortcut.join(host_end, ip, mac);
    }
}

/// Takes the endpoint off its network's shortcut, while its host end is
/// still a port of the bridge. Nothing to ask the kernel when the network
/// is off the fast path (it never had the program).
pub(super) fn leave_fastpath(db: &Db, kernel: &mut Kernel, ep: &Endpoint) -> Result<()> {
    let Some(host_end) = ep.host_end() else {
        return Ok(());
    };
    if db.network(&ep.network)?.is_some_and(|n| !n.fastpath()) {
        return Ok(());
    }
    for a in &ep.addresses {
        if let IpAddr::V4(ip) = a.addr() {
            crate::fastpath::leave(kernel.host()?, host_end, ip)
                .map_err(|e| Error::kernel(format!("take {ip} off the fast path"), e))?;
        }
    }
    Ok(())
}

/// The network's device on the host: its bridge, or its macvlan parent.
fn host_device(host: &mut Rtnl, net: &Network) -> Result<crate::netlink::Link> {
    host.link(&net.bridge)
        .map_err(|e| Error::kernel("list links", e))?
        .ok_or_else(|| {
            Error::NotFound(match net.driver {
                Driver::Bridge => format!(
                    "bridge {} of network \"{}\" is missing from the host; run `rete gc` to restore it",
                    net.bridge, net.name
                ),
                Driver::Macvlan => format!(
                    "parent device {} of macvlan network \"{}\" is missing from the host; recreate the network on an existing device",
                    net.bridge, net.name
                ),
            })
        })
}

/// Takes the endpoint's devices out of the kernel: the host end of its veth
/// pair (the peer goes with it), or its macvlan interface inside the
/// container's namespace `netns` (nothing to do when that is gone), and its
/// rate limits. Already gone is not an error.
pub(super) fn unplumb(
    db: &Db,
    kernel: &mut Kernel,
    netns: Option<&std::path::Path>,
    ep: &Endpoint,
) -> Result<()> {
    leave_fastpath(db, kernel, ep)?;
    match ep.host_end() {
        // Closed now, unlisted and freed by the kernel after this returns.
        Some(host_end) => {
            let ns = netns.and_then(|p| netns::open(p).ok());
            if !delete_from_inside(kernel, ns.as_ref(), ep, host_end)? {
                crate::linger::delete_link(host_end)
                    .map_err(|e| Error::kernel(format!("delete veth {host_end}"), e))?;
            }
        }
        None => {
            if let Some(ns) = netns.and_then(|p| netns::open(p).ok()) {
                let mut inner = Rtnl::open_in(&ns)
                    .map_err(|e| Error::kernel("open rtnetlink in container", e))?;
                inner
                    .del_link(&ep.ifname)
                    .map_err(|e| Error::kernel(format!("delete macvlan {}", ep.ifname), e))?;
            }
        }
    }
    shaping::remove(kernel, ep)
}

/// Deletes the endpoint's veth pair from its container end, if that is in
/// namespace `ns` under the endpoint's name (false, having done nothing,
/// when it is not). The kernel then says the container end is closed before
/// the host end's close and its leaving the bridge walk the bridge's ports
/// (~3 ms with 1000 of them), which goes on in rete's lingering process
/// (see `crate::linger`).
fn delete_from_inside(
    kernel: &mut Kernel,
    ns: Option<&File>,
    ep: &Endpoint,
    host_end: &str,
) -> Result<bool> {
    let Some(ns) = ns.filter(|ns| is_container_end(kernel, ns, ep, host_end)) else {
        return Ok(false);
    };
    crate::linger::delete_link_in(ns, &ep.ifname)
        .map_err(|e| Error::kernel(format!("delete veth {host_end}"), e))?;
    Ok(true)
}

/// Whether link `ep.ifname` of namespace `ns` and host end `host_end` are
/// the two ends of one veth pair.
fn is_container_end(kernel: &mut Kernel, ns: &File, ep: &Endpoint, host_end: &str) -> bool {
    let Some(host) = kernel
        .host()
        .ok()
        .and_then(|h| h.link(host_end).ok().flatten())
    else {
        return false;
    };
    let Some(inner) = Rtnl::open_in(ns)
        .ok()
        .and_then(|mut r| r.link(&ep.ifname).ok().flatten())
    else {
        return false;
    };
    inner.kind.as_deref() == Some("veth")
        && inner.peer == Some(host.index)
        && host.peer == Some(inner.index)
}

/// Unplumbs an endpoint whose namespace rete has just unpinned (its
/// processes ended), `ns` the last hold on it: the pair goes from inside
/// (see [`delete_from_inside`]), before the namespace with it. Without a hold,
/// the kernel deletes the pair in the namespace's teardown, batched and
/// off this process's path; only the host end is cut off the bridge now,
/// so that it carries nothing even while something outside rete still
/// holds the namespace (`rete gc` deletes such an end).
pub(super) fn unplumb_dropped(kernel: &mut Kernel, ns: Option<&File>, ep: &Endpoint) -> Result<()> {
    if let Some(host_end) = ep.host_end() {
        if !delete_from_inside(kernel, ns, ep, host_end)? {
            kernel
                .host()?
                .cut_off(host_end)
                .map_err(|e| Error::kernel(format!("take veth {host_end} off its bridge"), e))?;
        }
    }
    shaping::remove(kernel, ep)
}

/// A MAC derived from the endpoint's address (its IPv4 one, else the low 32
/// bits of its IPv6 one), as Docker did: an address freed and leased again
/// comes back with the same MAC, so the ARP and NDP entries the host and
/// other containers still hold for it stay right. Addresses are unique on a
/// bridge, and so are these MACs.
fn derived_mac(addresses: &[IpNet]) -> Option<[u8; 6]> {
    let ip = addresses
        .iter()
        .map(|a| a.addr())
        .find(IpAddr::is_ipv4)
        .or_else(|| addresses.first().map(|a| a.addr()))?;
    let low = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    Some([0x02, 0x42, low[0], low[1], low[2], low[3]])
}
