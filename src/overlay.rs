//! Netlink operations of the multi-host datapath: the VXLAN device, and per
//! peer a route, a permanent neighbour and an FDB entry (Flannel's scheme:
//! no learning, everything programmed from the cluster registry).

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{LinkVxlan, RouteMessageBuilder};

use crate::netlink::Rtnl;

impl Rtnl {
    /// Creates a VXLAN device bound to `local` on the underlay, learning off
    /// (peers are programmed, never learned).
    pub fn add_vxlan(
        &mut self,
        name: &str,
        vni: u32,
        local: Ipv4Addr,
        port: u16,
        mac: [u8; 6],
    ) -> io::Result<()> {
        let msg = LinkVxlan::new(name, vni)
            .local(local)
            .port(port)
            .learning(false)
            .address(mac.to_vec())
            .up()
            .build();
        self.create(RouteNetlinkMessage::NewLink(msg))
    }

    /// Adds or replaces a route to `dst` via `gateway`; `onlink` with a
    /// device when the gateway is not on a connected subnet (the VXLAN case).
    pub fn replace_route(
        &mut self,
        dst: Ipv4Net,
        gateway: Ipv4Addr,
        dev: Option<u32>,
    ) -> io::Result<()> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .gateway(gateway);
        if let Some(index) = dev {
            b = b.output_interface(index).onlink();
        }
        self.request(
            RouteNetlinkMessage::NewRoute(b.build()),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Deletes the route to `dst`; a route already gone is not an error.
    pub fn delete_route(&mut self, dst: Ipv4Net) -> io::Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .build();
        match self.change(RouteNetlinkMessage::DelRoute(msg)) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// Adds or replaces a permanent neighbour entry on link `index`.
    pub fn replace_neighbour(&mut self, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> io::Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.header.state = NeighbourState::Permanent;
        m.header.kind = RouteType::Unspec;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.request(
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Deletes a neighbour entry; one already gone is not an error.
    pub fn delete_neighbour(&mut self, index: u32, ip: Ipv4Addr) -> io::Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        match self.change(RouteNetlinkMessage::DelNeighbour(m)) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }

    /// Adds or replaces the VXLAN FDB entry sending frames for `mac` to the
    /// underlay address `remote`.
    pub fn replace_fdb(&mut self, index: u32, mac: [u8; 6], remote: IpAddr) -> io::Result<()> {
        self.request(
            RouteNetlinkMessage::NewNeighbour(fdb_message(index, mac, Some(remote))),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Deletes a VXLAN FDB entry; one already gone is not an error.
    pub fn delete_fdb(&mut self, index: u32, mac: [u8; 6], remote: IpAddr) -> io::Result<()> {
        match self.change(RouteNetlinkMessage::DelNeighbour(fdb_message(
            index,
            mac,
            Some(remote),
        ))) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }
}

fn fdb_message(index: u32, mac: [u8; 6], remote: Option<IpAddr>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    if let Some(ip) = remote {
        m.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
    }
    m
}
