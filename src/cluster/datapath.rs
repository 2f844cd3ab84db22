//! The host's side of the cluster network in the kernel: how packets for a
//! peer's container subnet leave this host.
//!
//! - vxlan (Flannel's scheme, seed 001): one VXLAN device, learning off;
//!   per peer an onlink route to its subnet via the subnet's first address
//!   on the device, a permanent neighbour entry giving that address the
//!   peer's VTEP MAC, and an FDB entry sending that MAC to the peer's
//!   underlay address. Nothing is learned; everything comes from etcd.
//! - host-gw: per peer a route to its subnet via its underlay address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use super::registry::{vtep_mac, Backend, NodeRecord};
use crate::error::{Error, Result};
use crate::fastpath::{Arrivals, Hop};
use crate::names;
use crate::netlink::{Link, Rtnl};

/// The VXLAN device. Not `rete-…`: gc removes stray veths of that prefix.
pub const VXLAN_DEVICE: &str = "retevxlan0";
/// VXLAN network identifier of the cluster.
pub const VNI: u32 = 1;
/// The underlay UDP port (the Linux kernel's and Flannel's default).
pub const VXLAN_PORT: u16 = crate::fastpath::VXLAN_PORT;
/// What VXLAN encapsulation adds to each packet (outer IPv4, UDP, VXLAN,
/// inner Ethernet).
pub const VXLAN_OVERHEAD: u32 = 50;

pub struct Datapath {
    rtnl: Rtnl,
    backend: Backend,
    /// This host's record.
    me: NodeRecord,
    /// The VXLAN device's index (vxlan backend).
    vxlan: Option<u32>,
    /// Peers programmed, by subnet.
    peers: BTreeMap<Ipv4Net, NodeRecord>,
    /// The cluster network's fast path routes to the peers, and the device
    /// they leave through (the underlay interface).
    routes: Option<(crate::fastpath::Routes, u32)>,
}

fn kernel(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::kernel(what, e)
}

impl Datapath {
    /// Sets up this host's side: for vxlan, the device bound to the
    /// underlay address, holding the subnet's first address. With
    /// `fastpath`, traffic between the containers on `bridge` (the cluster
    /// network's) and other hosts takes `crate::fastpath`: what arrives on
    /// the underlay interface goes straight to the container it is for, and
    /// the peers' subnets go into the network's routes map as they are
    /// programmed. Without, what a previous run put there is taken off.
    pub fn new(me: NodeRecord, bridge: &str, fastpath: bool) -> Result<Self> {
        let mut rtnl = Rtnl::open().map_err(kernel("open rtnetlink".into()))?;
        let vxlan = match me.backend {
            Backend::HostGw => {
                // A host that switched from vxlan keeps no stale device.
                let _ = rtnl.del_link(VXLAN_DEVICE);
                None
            }
            Backend::Vxlan => Some(ensure_vxlan(&mut rtnl, &me)?),
        };
        let arrival = link_holding(&mut rtnl, me.underlay)?.index;
        let arrivals = match vxlan {
            Some(dev) => {
                // Where an earlier version put its program.
                let _ = crate::fastpath::unroute(&mut rtnl, dev);
                Arrivals::Vxlan { vni: VNI }
            }
            None => Arrivals::Routed,
        };
        // A bridge the kernel lost (a reboot) takes no shortcut; the agent
        // goes on programming the kernel's routes.
        let bridge = match rtnl.link(bridge) {
            Ok(Some(link)) => Some(link),
            found => {
                if fastpath {
                    let why = match found {
                        Err(e) => e.to_string(),
                        Ok(_) => "it is gone".to_string(),
                    };
                    warn(&format!("no fast path: bridge {bridge}: {why}"));
                }
                None
            }
        };
        let routes = bridge
            .as_ref()
            .and_then(|b| match fastpath_routes(&mut rtnl, b, fastpath) {
                Ok(r) => r.map(|r| (r, arrival)),
                Err(e) => {
                    warn(&format!(
                        "traffic to other hosts takes the bridge: no fast path ({e})"
                    ));
                    None
                }
            });
        let bridge = bridge.filter(|_| fastpath);
        route_arrivals(&mut rtnl, bridge.as_ref(), arrival, arrivals);
        Ok(Datapath {
            rtnl,
            backend: me.backend,
            me,
            vxlan,
            peers: BTreeMap::new(),
            routes,
        })
    }

    /// Makes the datapath match `peers` exactly (this host excluded): adds
    /// or updates every one listed, removes every other route into the
    /// cluster range that a previous run may have left.
    pub fn reconcile(&mut self, cidr: Ipv4Net, peers: &[NodeRecord]) -> Result<()> {
        for p in peers {
            self.upsert(p)?;
        }
        let keep: Vec<Ipv4Net> = peers.iter().map(|p| p.subnet).collect();
        let stale: Vec<NodeRecord> = self
            .peers
            .values()
            .filter(|p| !keep.contains(&p.subnet))
            .cloned()
            .collect();
        for p in stale {
            self.remove(&p)?;
        }
        let routes = self
            .rtnl
            .route_destinations()
            .map_err(kernel("list routes".into()))?;
        for r in routes {
            if let IpNet::V4(r) = r {
                if r.prefix_len() > cidr.prefix_len()
                    && cidr.contains(&r)
                    && r != self.me.subnet
                    && !keep.contains(&r)
                {
                    self.rtnl
                        .delete_route(r)
                        .map_err(kernel(format!("delete stale route to {r}")))?;
                }
            }
        }
        Ok(())
    }

    /// Programs one peer (or updates it after it moved).
    pub fn upsert(&mut self, peer: &NodeRecord) -> Result<()> {
        if peer.node == self.me.node || peer.subnet == self.me.subnet {
            return Ok(());
        }
        if self.peers.get(&peer.subnet) == Some(peer) {
            return Ok(());
        }
        if peer.backend != self.backend {
            warn(&format!(
                "host {} uses backend {}, this host {}; its subnet {} is not reachable from here",
                peer.node, peer.backend, self.backend, peer.subnet
            ));
            return Ok(());
        }
        if let Some(old) = self.peers.get(&peer.subnet).cloned() {
            self.remove(&old)?;
        }
        match self.vxlan {
            None => self
                .rtnl
                .replace_route(peer.subnet, peer.underlay, None)
                .map_err(kernel(format!(
                    "add route to {} via {} (host {}; is it on this host's underlay?)",
                    peer.subnet, peer.underlay, peer.node
                )))?,
            Some(dev) => {
                let mac = peer_mac(peer)?;
                let gateway = peer.subnet.network();
                self.rtnl
                    .replace_fdb(dev, mac, IpAddr::V4(peer.underlay))
                    .map_err(kernel(format!("add FDB entry for host {}", peer.node)))?;
                self.rtnl
                    .replace_neighbour(dev, gateway, mac)
                    .map_err(kernel(format!(
                        "add neighbour entry for host {}",
                        peer.node
                    )))?;
                self.rtnl
                    .replace_route(peer.subnet, gateway, Some(dev))
                    .map_err(kernel(format!(
                        "add route to {} (host {})",
                        peer.subnet, peer.node
                    )))?;
            }
        }
        // The shortcut only once the kernel's route is there to fall back
        // on.
        if let Some((routes, dev)) = &self.routes {
            let hop = match self.vxlan {
                Some(_) => Hop::Vxlan {
                    device: *dev,
                    local: self.me.underlay,
                    local_mac: vtep_mac(self.me.subnet),
                    peer: peer.underlay,
                    peer_mac: peer_mac(peer)?,
                    vni: VNI,
                },
                None => Hop::Routed {
                    device: *dev,
                    next_hop: peer.underlay,
                },
            };
            if let Err(e) = routes.insert(peer.subnet, hop) {
                warn(&format!(
                    "traffic to host {} takes the bridge: no fast path ({e})",
                    peer.node
                ));
            }
        }
        self.peers.insert(peer.subnet, peer.clone());
        Ok(())
    }

    /// Removes a peer from the datapath.
    pub fn remove(&mut self, peer: &NodeRecord) -> Result<()> {
        if peer.node == self.me.node && peer.subnet == self.me.subnet {
            return Ok(());
        }
        if let Some((routes, _)) = &self.routes {
            routes
                .remove(peer.subnet)
                .map_err(kernel(format!("forget the fast path to {}", peer.subnet)))?;
        }
        self.rtnl
            .delete_route(peer.subnet)
            .map_err(kernel(format!("delete route to {}", peer.subnet)))?;
        if let Some(dev) = self.vxlan {
            let gateway = peer.subnet.network();
            self.rtnl
                .delete_neighbour(dev, gateway)
                .map_err(kernel(format!("delete neighbour of host {}", peer.node)))?;
            if let Ok(mac) = peer_mac(peer) {
                self.rtnl
                    .delete_fdb(dev, mac, IpAddr::V4(peer.underlay))
                    .map_err(kernel(format!("delete FDB entry of host {}", peer.node)))?;
            }
        }
        self.peers.remove(&peer.subnet);
        Ok(())
    }

    /// The peers programmed now.
    pub fn peers(&self) -> impl Iterator<Item = &NodeRecord> {
        self.peers.values()
    }
}

fn peer_mac(peer: &NodeRecord) -> Result<[u8; 6]> {
    match &peer.vtep_mac {
        Some(m) => names::parse_mac(m),
        None => Ok(vtep_mac(peer.subnet)),
    }
}

/// The VXLAN device as it must be: bound to the underlay address, with this
/// host's MAC and the subnet's first address. One that differs is replaced.
fn ensure_vxlan(rtnl: &mut Rtnl, me: &NodeRecord) -> Result<u32> {
    let mac = vtep_mac(me.subnet);
    let address = me.subnet.network();
    let find = |rtnl: &mut Rtnl| rtnl.link(VXLAN_DEVICE).map_err(kernel("list links".into()));
    if let Some(link) = find(rtnl)? {
        let addresses = rtnl
            .addresses(link.index)
            .map_err(kernel("list addresses".into()))?;
        let right = link.mac.as_deref() == Some(&mac[..])
            && addresses.contains(&IpNet::V4(Ipv4Net::new(address, 32).expect("/32")));
        if right {
            // Kept as it is: traffic through it goes on across a restart.
            return Ok(link.index);
        }
        rtnl.del_link(VXLAN_DEVICE)
            .map_err(kernel(format!("replace {VXLAN_DEVICE}")))?;
    }
    rtnl.add_vxlan(VXLAN_DEVICE, VNI, me.underlay, VXLAN_PORT, mac)
        .map_err(kernel(format!(
            "create VXLAN device {VXLAN_DEVICE} on {}",
            me.underlay
        )))?;
    let link = find(rtnl)?.ok_or_else(|| {
        Error::kernel(
            format!("find {VXLAN_DEVICE}"),
            std::io::Error::from_raw_os_error(libc::ENODEV),
        )
    })?;
    rtnl.add_addr(link.index, IpAddr::V4(address), 32)
        .map_err(kernel(format!("add {address}/32 to {VXLAN_DEVICE}")))?;
    Ok(link.index)
}

/// Puts the cluster network's routed program (`crate::fastpath`) on the
/// device traffic from other hosts arrives on, or takes it off when
/// `bridge` is None. Best effort, like the fast path between containers:
/// where bpf(2) is refused, that traffic is routed through the bridge.
fn route_arrivals(rtnl: &mut Rtnl, bridge: Option<&Link>, arrival: u32, arrivals: Arrivals) {
    let done = match bridge {
        None => crate::fastpath::unroute(rtnl, arrival),
        Some(bridge) => crate::fastpath::route_into(rtnl, bridge, arrival, arrivals),
    };
    if let Err(e) = done {
        warn(&format!(
            "traffic from other hosts takes the bridge: no fast path ({e})"
        ));
    }
}

/// The cluster network's fast path routes, emptied: the peers are put
/// back as they are programmed (until then, their traffic takes the
/// bridge and the kernel's routes). Without `fastpath`, only emptied (if
/// the network has a program at all).
fn fastpath_routes(
    rtnl: &mut Rtnl,
    bridge: &Link,
    fastpath: bool,
) -> std::io::Result<Option<crate::fastpath::Routes>> {
    if !fastpath {
        return crate::fastpath::clear_routes(rtnl, bridge.index).map(|()| None);
    }
    let routes = crate::fastpath::routes(rtnl, bridge)?;
    routes.clear()?;
    Ok(Some(routes))
}

/// The interface holding the underlay address.
fn link_holding(rtnl: &mut Rtnl, underlay: Ipv4Addr) -> Result<Link> {
    for link in rtnl.links().map_err(kernel("list links".into()))? {
        let addresses = rtnl
            .addresses(link.index)
            .map_err(kernel("list addresses".into()))?;
        if addresses.iter().any(|a| a.addr() == IpAddr::V4(underlay)) {
            return Ok(link);
        }
    }
    Err(Error::Invalid(format!(
        "no interface of this host holds the underlay address {underlay}; give --underlay with one of its addresses"
    )))
}

/// The underlay's MTU less VXLAN's overhead: what the cluster network's
/// containers may send without fragmenting.
pub fn overlay_mtu(underlay: Ipv4Addr) -> Result<Option<u32>> {
    let mut rtnl = Rtnl::open().map_err(kernel("open rtnetlink".into()))?;
    let link = link_holding(&mut rtnl, underlay)?;
    Ok(link.mtu.map(|m| m.saturating_sub(VXLAN_OVERHEAD)))
}

/// Warnings go to stderr: the agent's log.
pub fn warn(msg: &str) {
    eprintln!("rete agent: {msg}");
}

/// The first IPv4 address of interface `name`: the underlay address when
/// the agent is given `--underlay-interface`.
pub fn ipv4_of_link(name: &str) -> Result<Ipv4Addr> {
    let mut rtnl = Rtnl::open().map_err(kernel("open rtnetlink".into()))?;
    let link = rtnl
        .link(name)
        .map_err(kernel("list links".into()))?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no interface {name} on this host; give an existing --underlay-interface"
            ))
        })?;
    rtnl.addresses(link.index)
        .map_err(kernel("list addresses".into()))?
        .into_iter()
        .find_map(|a| match a.addr() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| {
            Error::Invalid(format!(
                "interface {name} has no IPv4 address; give --underlay IP"
            ))
        })
}
