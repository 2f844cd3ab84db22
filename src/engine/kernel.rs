//! The engine's connections to the kernel, opened on first use, and the
//! executor of undo steps.

use std::net::IpAddr;

use crate::config::Paths;
use crate::error::{Error, Result};
use crate::fastpath::{Published, Shortcut};
use crate::firewall::{Element, Firewall};
use crate::journal::Undo;
use crate::model::{Driver, Network, Protocol};
use crate::netlink::Rtnl;
use crate::netns;
use crate::store::Db;

pub(super) struct Kernel {
    pub paths: Paths,
    host: Option<Rtnl>,
    firewall: Option<Firewall>,
    /// The fast paths this operation used, by bridge name (see
    /// [`Kernel::shortcut`]).
    shortcuts: Vec<(String, Shortcut)>,
}

impl Kernel {
    pub fn new(paths: Paths) -> Self {
        Kernel {
            paths,
            host: None,
            firewall: None,
            shortcuts: Vec::new(),
        }
    }

    /// The fast path of the network on bridge `bridge` (`index`, when the
    /// caller knows it), with the host's rtnetlink: found (or made) on first
    /// use in an operation, then kept until it ends ([`Kernel::end_operation`]).
    /// None when the kernel has no such bridge or will not load the program:
    /// the fast path is best effort.
    pub fn shortcut(&mut self, bridge: &str, index: Option<u32>) -> Option<(&mut Rtnl, &Shortcut)> {
        self.host().ok()?;
        let host = self.host.as_mut()?;
        let at = match self.shortcuts.iter().position(|(b, _)| b == bridge) {
            Some(at) => at,
            None => {
                let index = match index {
                    Some(index) => index,
                    None => host.link(bridge).ok()??.index,
                };
                let shortcut = Shortcut::of_bridge(host, index).ok()?;
                self.shortcuts.push((bridge.to_string(), shortcut));
                self.shortcuts.len() - 1
            }
        };
        Some((host, &self.shortcuts[at].1))
    }

    /// Forgets what one operation found: the next may find the kernel
    /// changed by others.
    pub fn end_operation(&mut self) {
        self.shortcuts.clear();
    }

    /// rtnetlink in the host namespace (the one rete runs in).
    pub fn host(&mut self) -> Result<&mut Rtnl> {
        if self.host.is_none() {
            self.host = Some(Rtnl::open().map_err(|e| Error::kernel("open rtnetlink", e))?);
        }
        Ok(self.host.as_mut().expect("opened above"))
    }

    /// The firewall.
    pub fn firewall(&mut self) -> &mut Firewall {
        self.firewall.get_or_insert_with(Firewall::new)
    }

    /// Adds firewall elements; a table that had vanished (flushed by
    /// someone) is recreated and refilled from the store first.
    pub fn firewall_add(&mut self, db: &Db, elements: &[Element]) -> Result<()> {
        self.firewall().add(elements, || all_elements(db))?;
        self.shortcut_published(db, elements, true);
        Ok(())
    }

    /// Deletes firewall elements (those already gone are skipped).
    pub fn firewall_delete(&mut self, db: &Db, elements: &[Element]) -> Result<()> {
        self.shortcut_published(db, elements, false);
        self.firewall().delete(elements)
    }

    /// Puts the published ports among `elements` on (or takes them off)
    /// the fast path of their container's network: IPv4 TCP and UDP to a
    /// container of a network with the shortcut. Best effort, as the
    /// shortcut is: the firewall's DNAT takes what it does not.
    pub fn shortcut_published(&mut self, db: &Db, elements: &[Element], add: bool) {
        let published: Vec<Published> = elements
            .iter()
            .filter_map(|e| match *e {
                Element::Publish {
                    host_ip: IpAddr::V4(host),
                    protocol: protocol @ (Protocol::Tcp | Protocol::Udp),
                    host_port,
                    target: IpAddr::V4(container),
                    target_port,
                } => Some(Published {
                    host,
                    host_port,
                    protocol: protocol.number(),
                    container,
                    container_port: target_port,
                }),
                _ => None,
            })
            .collect();
        if published.is_empty() {
            return;
        }
        let Ok(networks) = db.networks() else {
            return;
        };
        // Internal networks are cut off from the uplink by the firewall:
        // they keep to its verdict.
        for net in networks.iter().filter(|n| n.fastpath() && !n.internal) {
            let here: Vec<Published> = published
                .iter()
                .filter(|p| {
                    let target = IpAddr::V4(p.container);
                    net.subnets.iter().any(|s| s.subnet.contains(&target))
                })
                .copied()
                .collect();
            if here.is_empty() {
                continue;
            }
            if add {
                if let Some((_, shortcut)) = self.shortcut(&net.bridge, None) {
                    let _ = shortcut.publish(&here);
                }
                continue;
            }
            let Ok(host) = self.host() else {
                return;
            };
            if let Ok(Some(bridge)) = host.link(&net.bridge) {
                let _ = crate::fastpath::unpublish(host, bridge.index, &here);
            }
        }
    }

    /// Drops the firewall handle after its table was removed.
    pub fn forget_firewall(&mut self) {
        self.firewall = None;
    }

    /// Undoes steps, newest first. Best effort: an undo that fails (the object
    /// is already gone) does not stop the others.
    pub fn undo(&mut self, steps: Vec<Undo>) {
        for step in steps {
            match step {
                Undo::Link(name) => {
                    if let Ok(h) = self.host() {
                        let _ = h.del_link(&name);
                    }
                }
                Undo::Netns(path) => {
                    let _ = netns::remove(&path);
                }
                Undo::Elements(elements) => {
                    let _ = self.firewall().delete(&elements);
                }
            }
        }
    }
}

/// Every element the firewall should hold, from the store.
pub fn all_elements(db: &Db) -> Result<Vec<Element>> {
    let mut out = Vec::new();
    for n in db.networks()? {
        out.extend(network_elements(&n));
    }
    for c in db.containers()? {
        out.extend(super::publish::elements(&c));
    }
    Ok(out)
}

/// The firewall elements of one network (a macvlan network has none: its
/// traffic does not pass through the host's stack).
pub fn network_elements(n: &Network) -> Vec<Element> {
    if n.driver == Driver::Macvlan {
        return Vec::new();
    }
    let mut out = vec![
        Element::Bridge(n.bridge.clone()),
        Element::Intra(n.bridge.clone()),
    ];
    if n.isolate {
        out.push(Element::Isolated(n.bridge.clone()));
    }
    if n.internal {
        out.push(Element::Internal(n.bridge.clone()));
    }
    for s in &n.subnets {
        out.push(Element::Subnet(s.subnet));
        if !n.internal && n.masquerade {
            out.push(Element::Masquerade(s.subnet));
        }
    }
    if !n.internal && n.masquerade {
        out.extend(n.direct.iter().map(|d| Element::Direct(*d)));
    }
    out
}
