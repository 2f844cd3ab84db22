//! Shortcuts past the bridge, with eBPF programs at tc ingress that hand
//! a frame straight to where the kernel's forwarding would take it.
//!
//! - **Between containers of one network**: a program at the ingress of
//!   every host-side veth end looks up the frame's IPv4 destination in the
//!   network's map (address → the host end of that container's veth and
//!   its MAC) and, for a frame addressed to that very MAC, hands it to the
//!   peer inside the destination's namespace (`bpf_redirect_peer`),
//!   skipping the bridge and the second veth crossing. Everything else (ARP,
//!   IPv6, traffic for the gateway, the host or other networks, frames for
//!   any other MAC) goes on as before.
//! - **To another host's containers** (the cluster network,
//!   `crate::cluster`): the same program, for a frame a container sends to
//!   its gateway's MAC for an address in another host's container subnet
//!   (the network's routes map, longest prefix → [`Hop`]), with a TTL above
//!   1, does the host's forwarding: TTL − 1, and out of the underlay
//!   interface with `bpf_redirect_neigh` — for host-gw as it is, toward
//!   the peer's underlay address (the kernel's neighbour entry gives the
//!   MACs); for vxlan encapsulated as the kernel's VXLAN device would
//!   (`bpf_skb_adjust_room`, outer IPv4, UDP port 8472, VXLAN header, inner
//!   Ethernet between the two VTEP MACs) and routed by the kernel's table
//!   toward the peer, which may be routers away.
//!   Past the bridge, routing, the forward hooks and the VXLAN device.
//! - **From another host**: a second program over the container map, at the
//!   ingress of the host's underlay interface, takes a packet for this
//!   host's MAC (not broadcast, not another's) and a local container's
//!   address — for vxlan only inside a VXLAN packet of the cluster's VNI,
//!   whose outer headers it strips — and forwards it as the host would:
//!   TTL − 1, the container's MAC as destination and the bridge's as
//!   source, straight into the container's namespace.
//!
//! rete's firewall passes cluster traffic untouched (no isolation,
//! masquerade or DNAT applies to it, and no rule drops on conntrack
//! state), so skipping netfilter on those hops changes no verdict. A
//! packet the programs do not take (a TTL about to run out, a frame the
//! kernel will not grow, an address not in a map) takes the kernel's path,
//! which stays complete: the maps are shortcuts beside the kernel's routes
//! and devices, never instead of them.
//!
//! The programs are a few dozen instructions, assembled here (`asm`,
//! `programs`): no compiler or loader library is needed, only the `bpf(2)`
//! system call (`bpf`).

mod asm;
mod bpf;
mod programs;

use std::io;
use std::net::Ipv4Addr;

use bpf::{Flows, Map, Ports, Program};
pub use bpf::{Hop, Published, Routes};

use crate::netlink::{Link, Rtnl};

/// The program's name, by which rete knows it from others on a device.
pub const PROG_NAME: &str = "rete_fastpath";

/// The program on the underlay interface.
pub const ROUTED_NAME: &str = "rete_routed";

/// The name of the map of other hosts' subnets.
const ROUTES_NAME: &str = "rete_routes";

/// The names of a network's maps of published ports and of the
/// connections through them.
const PORTS_NAME: &str = "rete_ports";
const FLOWS_NAME: &str = "rete_flows";

/// The publish program's filter priority on the uplink: before the routed
/// program's, both passing what is not theirs.
const PUBLISH_PRIORITY: u16 = 0x7e7d;

/// The name of the publish program of the network on bridge `bridge`, on
/// the uplink (one per network).
fn publish_name(bridge: u32) -> String {
    format!("rete_pub{bridge}")
}

/// The shared tc block of the network on bridge `bridge`: its program's
/// filter, run on the ingress of the bridge ([`Rtnl::join_blocks`]) and of
/// every container's host end ([`Rtnl::join_ingress_block`]).
fn ingress_block(bridge: u32) -> u32 {
    0x8000_0000 | bridge
}

/// The shared tc block of the bridges' egress: empty, one for all networks.
const EGRESS_BLOCK: u32 = 0x7e7e_0001;

/// The routed program's filter priority on a device rete does not own
/// (above the `pref 1` other tools take by default).
const ROUTED_PRIORITY: u16 = 0x7e7e;

/// The VXLAN UDP port (the Linux kernel's and Flannel's default).
pub const VXLAN_PORT: u16 = 8472;

/// How arrivals from other hosts are wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// Plain IPv4 packets (host-gw).
    Routed,
    /// VXLAN packets of network `vni`.
    Vxlan { vni: u32 },
}

/// A network's shortcut: its program and the maps a container's
/// attachment writes, found through the filter on its bridge (which also
/// keeps them alive while the network has no container) or made and put
/// there. Found once per operation and kept while it lasts (the engine's
/// `Kernel`), not once per use: finding it is a filter dump and a dozen
/// bpf(2) calls.
pub struct Shortcut {
    prog: Program,
    /// The shared block its filter is in; None on a bridge from before
    /// there was one, whose links each get a filter.
    block: Option<u32>,
    containers: Map,
    /// None for a program from before published ports had the shortcut.
    ports: Option<Ports>,
}

impl Shortcut {
    /// The shortcut of the network on bridge `bridge`, made if it has none.
    pub fn of_bridge(host: &mut Rtnl, bridge: u32) -> io::Result<Shortcut> {
        if let Some((id, block)) = host.ingress_program_in(bridge, PROG_NAME)? {
            if let Ok(prog) = Program::by_id(id, PROG_NAME) {
                let mut maps = Map::all_of_program(&prog)?;
                let mut take = |name: &str| {
                    maps.iter()
                        .position(|(n, _)| n == name)
                        .map(|at| maps.swap_remove(at).1)
                };
                let containers = take(PROG_NAME).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "fast path program without its map",
                    )
                })?;
                let ports = take(PORTS_NAME).map(Ports);
                return Ok(Shortcut {
                    prog,
                    block,
                    containers,
                    ports,
                });
            }
        }
        let gateway = host
            .link_by_index(bridge)?
            .and_then(|l| mac_of(&l))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        let containers = Map::create(PROG_NAME)?;
        let routes = Routes::create(ROUTES_NAME)?;
        let ports = Ports::create(PORTS_NAME)?;
        let flows = Flows::create(FLOWS_NAME)?;
        let insns = programs::bridge_program(
            containers.fd(),
            routes.0.fd(),
            (ports.0.fd(), flows.0.fd()),
            gateway,
        );
        let prog = Program::load(&insns, PROG_NAME)?;
        let block = match host.join_blocks(bridge, ingress_block(bridge), EGRESS_BLOCK) {
            Ok(()) => {
                host.attach_block_program(ingress_block(bridge), prog.fd(), PROG_NAME)?;
                Some(ingress_block(bridge))
            }
            // A qdisc of someone's there already: a filter of its own.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                host.attach_ingress_program(bridge, prog.fd(), PROG_NAME)?;
                None
            }
            Err(e) => return Err(e),
        };
        // Best effort: without it, published ports take the host's DNAT.
        let _ = let_in_published(host, bridge, (&ports, &flows, &containers), gateway);
        Ok(Shortcut {
            prog,
            block,
            containers,
            ports: Some(ports),
        })
    }

    /// Runs the program on what a container's host end `host_end` receives
    /// (the container's frames), so they take the shortcut to the other
    /// containers. Best before the link is up (see `Rtnl::join_blocks`).
    pub fn plug(&self, host: &mut Rtnl, host_end: u32) -> io::Result<()> {
        match self.block {
            Some(block) => host.join_ingress_block(host_end, block),
            None => host.attach_ingress_program(host_end, self.prog.fd(), PROG_NAME),
        }
    }

    /// Puts the container behind host end `host_end` (plugged) on the
    /// shortcut: the other containers' frames for `ip` and `mac` go
    /// straight to it.
    pub fn join(&self, host_end: u32, ip: Ipv4Addr, mac: [u8; 6]) -> io::Result<()> {
        self.containers.insert(ip, host_end, mac)
    }

    /// Adds published ports of the network to the shortcut, which takes
    /// their traffic from the uplink straight to the containers (nothing
    /// to do for a program from before published ports had it).
    pub fn publish(&self, ports: &[Published]) -> io::Result<()> {
        match &self.ports {
            Some(map) => ports.iter().try_for_each(|p| map.insert(p)),
            None => Ok(()),
        }
    }
}

/// Puts the network's publish program at the ingress of the host's uplink
/// (the device of its default route), replacing one a previous run left.
fn let_in_published(
    host: &mut Rtnl,
    bridge: u32,
    (ports, flows, map): (&Ports, &Flows, &Map),
    gateway: [u8; 6],
) -> io::Result<()> {
    // A host whose default route leads into a network has no uplink here.
    let Some(uplink) = host
        .default_route_link()?
        .filter(|l| l.index != bridge && l.controller.is_none())
    else {
        return Ok(());
    };
    let name = publish_name(bridge);
    let insns = programs::publish_program(ports.0.fd(), flows.0.fd(), map.fd(), gateway);
    let prog = Program::load(&insns, &name)?;
    host.detach_ingress_program(uplink.index, &name)?;
    host.attach_ingress_program_at(uplink.index, PUBLISH_PRIORITY, prog.fd(), &name)
}

/// Takes published ports of the network on bridge `bridge` off its
/// shortcut (nothing to do for a network without a fast path program, or
/// one from before published ports had one).
pub fn unpublish(host: &mut Rtnl, bridge: u32, ports: &[Published]) -> io::Result<()> {
    match map_of_bridge(host, bridge, PORTS_NAME)? {
        Some(map) => {
            let map = Ports(map);
            ports.iter().try_for_each(|p| map.remove(p))
        }
        None => Ok(()),
    }
}

/// Takes the publish program of the network on bridge `bridge` off the
/// uplink, before the network goes (nothing to do when it has none).
pub fn unpublish_network(host: &mut Rtnl, bridge: u32) -> io::Result<()> {
    match host.default_route_link()? {
        Some(uplink) => host.detach_ingress_program(uplink.index, &publish_name(bridge)),
        None => Ok(()),
    }
}

fn mac_of(link: &Link) -> Option<[u8; 6]> {
    link.mac
        .as_deref()
        .and_then(|m| <[u8; 6]>::try_from(m).ok())
}

/// The routes of the network on `bridge` (made with its program if it has
/// none yet).
pub fn routes(host: &mut Rtnl, bridge: &Link) -> io::Result<Routes> {
    let shortcut = Shortcut::of_bridge(host, bridge.index)?;
    Map::of_program(&shortcut.prog, ROUTES_NAME)?
        .map(Routes)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "the network's fast path program predates routes to other hosts",
            )
        })
}

/// Empties the routes of the network on bridge `bridge`, if it has a
/// program (none is made).
pub fn clear_routes(host: &mut Rtnl, bridge: u32) -> io::Result<()> {
    match map_of_bridge(host, bridge, ROUTES_NAME)? {
        Some(map) => Routes(map).clear(),
        None => Ok(()),
    }
}

/// Puts the arrivals program of the network on `bridge` at the ingress of
/// `device` (replacing one a previous run left), so that packets arriving
/// there, wrapped as `arrivals` says, for the network's containers go
/// straight to them.
pub fn route_into(
    host: &mut Rtnl,
    bridge: &Link,
    device: u32,
    arrivals: Arrivals,
) -> io::Result<()> {
    let gateway = mac_of(bridge).ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
    let shortcut = Shortcut::of_bridge(host, bridge.index)?;
    let map = shortcut.containers.fd();
    let insns = match arrivals {
        Arrivals::Routed => programs::routed_program(map, gateway),
        Arrivals::Vxlan { vni } => programs::decap_program(map, gateway, vni),
    };
    let prog = Program::load(&insns, ROUTED_NAME)?;
    host.detach_ingress_program(device, ROUTED_NAME)?;
    host.attach_ingress_program_at(device, ROUTED_PRIORITY, prog.fd(), ROUTED_NAME)
}

/// Takes the routed program off `device` (nothing to do when it has none).
pub fn unroute(host: &mut Rtnl, device: u32) -> io::Result<()> {
    host.detach_ingress_program(device, ROUTED_NAME)
}

/// Takes `ip` off the shortcut of the network whose bridge host end
/// `host_end` is a port of (nothing to do when it is in no bridge, or the
/// bridge has no program).
pub fn leave(host: &mut Rtnl, host_end: &str, ip: Ipv4Addr) -> io::Result<()> {
    let Some(bridge) = host.link(host_end)?.and_then(|l| l.controller) else {
        return Ok(());
    };
    match map_of_bridge(host, bridge, PROG_NAME)? {
        Some(map) => map.remove(ip),
        None => Ok(()),
    }
}

/// The map named `name` of the network on bridge `bridge`, if it has a
/// program (none is made).
fn map_of_bridge(host: &mut Rtnl, bridge: u32, name: &str) -> io::Result<Option<Map>> {
    let Some(id) = host.ingress_program(bridge, PROG_NAME)? else {
        return Ok(None);
    };
    let Ok(prog) = Program::by_id(id, PROG_NAME) else {
        return Ok(None);
    };
    Map::of_program(&prog, name)
}

/// The addresses on the shortcut of the network on bridge `bridge`.
pub fn entries(host: &mut Rtnl, bridge: u32) -> io::Result<Vec<Ipv4Addr>> {
    match map_of_bridge(host, bridge, PROG_NAME)? {
        Some(map) => map.addresses(),
        None => Ok(Vec::new()),
    }
}

/// Takes every address but those in `keep` off the shortcut of the
/// network on bridge `bridge` (entries a killed process left: they would
/// send a later container's traffic to a device that is gone); returns
/// those it took off.
pub fn prune(host: &mut Rtnl, bridge: u32, keep: &[Ipv4Addr]) -> io::Result<Vec<Ipv4Addr>> {
    let Some(map) = map_of_bridge(host, bridge, PROG_NAME)? else {
        return Ok(Vec::new());
    };
    let gone: Vec<Ipv4Addr> = map
        .addresses()?
        .into_iter()
        .filter(|ip| !keep.contains(ip))
        .collect();
    for ip in &gone {
        map.remove(*ip)?;
    }
    Ok(gone)
}
