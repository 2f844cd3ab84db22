//! `rete gc`: reconcile the kernel with the store after crashes and outside
//! interference. The store is the truth: what it does not own goes, what it
//! owns and the kernel lost is rebuilt.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::endpoint::{plumb, unplumb};
use super::kernel::{all_elements, Kernel};
use super::shaping;
use super::{network, Engine};
use crate::error::Result;
use crate::journal::{self, Undo};
use crate::model::{Driver, IFB_PREFIX, VETH_PREFIX};
use crate::netlink::{Link, Rtnl};
use crate::netns;

/// What a gc pass did.
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Containers removed because their namespace was gone.
    pub containers: Vec<String>,
    /// Host devices deleted that no record owned.
    pub links: Vec<String>,
    /// Namespaces unpinned that a killed operation had created.
    pub namespaces: Vec<PathBuf>,
    /// Bridges recreated for networks whose bridge had vanished.
    pub bridges: Vec<String>,
    /// Containers whose lost veth pairs were plumbed again.
    pub repaired: Vec<String>,
    /// Addresses taken off a network's fast path that no endpoint holds
    /// (`network address`).
    pub fastpath: Vec<String>,
}

impl Engine {
    pub fn gc(&mut self) -> Result<GcReport> {
        let run_dir = self.paths().run_dir.clone();
        self.transact(|db, kernel, journal| {
            let mut report = GcReport::default();

            // Containers whose namespace vanished: release what they held.
            for c in db.containers()? {
                // A runtime's namespace counts as gone when its path no
                // longer holds a namespace: a plain file stays behind when
                // its pin's mount went (a reboot where /run is on disk, or
                // rootless Podman's mount namespace ending).
                let gone = match &c.netns {
                    Some(p) => !netns::is_pinned(p),
                    None => false,
                };
                if gone {
                    for ep in &c.endpoints {
                        let _ = unplumb(db, kernel, None, ep);
                    }
                    // An unpinned file a removal killed midway left behind
                    // would block a new container of the same name.
                    if let (Some(p), true) = (&c.netns, c.owns_netns) {
                        let _ = netns::remove(p);
                    }
                    db.delete_container(&c.name)?;
                    report.containers.push(c.name);
                }
            }

            let containers = db.containers()?;
            let networks = db.networks()?;
            let taps = db.taps()?;
            let owned_links: BTreeSet<String> = containers
                .iter()
                .flat_map(|c| {
                    c.endpoints
                        .iter()
                        .flat_map(|e| e.host_end().map(str::to_string).into_iter().chain(e.ifb()))
                })
                .chain(
                    networks
                        .iter()
                        .filter(|n| n.driver == Driver::Bridge)
                        .map(|n| n.bridge.clone()),
                )
                .chain(taps.iter().map(|t| t.name.clone()))
                .collect();
            let owned_ns: BTreeSet<PathBuf> =
                containers.iter().filter_map(|c| c.netns.clone()).collect();

            // What killed operations left half done.
            for (path, steps) in journal::orphans(&run_dir) {
                for step in steps {
                    match step {
                        Undo::Link(name)
                            if !owned_links.contains(&name)
                                && kernel.host()?.link(&name).ok().flatten().is_some() =>
                        {
                            let _ = kernel.host()?.del_link(&name);
                            report.links.push(name);
                        }
                        Undo::Netns(p) if !owned_ns.contains(&p) && p.exists() => {
                            let _ = netns::remove(&p);
                            report.namespaces.push(p);
                        }
                        _ => {}
                    }
                }
                let _ = std::fs::remove_file(path);
            }

            // Host ends of veth pairs and ifbs rete named, that no endpoint
            // owns; not those the kernel is deleting with their container's
            // namespace (a `rete rm` moments ago).
            let links = kernel
                .host()?
                .links()
                .map_err(|e| crate::error::Error::kernel("list links", e))?;
            let orphans = links.into_iter().filter(|l| {
                (l.name.starts_with(VETH_PREFIX) || l.name.starts_with(IFB_PREFIX))
                    && !owned_links.contains(&l.name)
            });
            for l in settle_dropped(kernel, orphans.collect())? {
                let _ = kernel.host()?.del_link(&l.name);
                report.links.push(l.name);
            }

            // Bridges the store has and the kernel lost.
            for n in networks.iter().filter(|n| n.driver == Driver::Bridge) {
                if kernel.host()?.link(&n.bridge).ok().flatten().is_none() {
                    network::build_bridge(kernel, n)?;
                    report.bridges.push(n.bridge.clone());
                }
            }

            // Endpoints whose devices were lost while their namespace lives
            // on (deleted by hand, or a killed `rm` of a runtime's namespace):
            // plumbed again with the addresses they hold. A veth pair is
            // looked for by its host end, a macvlan interface inside.
            let links: BTreeSet<String> = kernel
                .host()?
                .links()
                .map_err(|e| crate::error::Error::kernel("list links", e))?
                .into_iter()
                .map(|l| l.name)
                .collect();
            for mut c in db.containers()? {
                let Some(path) = c.netns.clone() else {
                    continue;
                };
                // A veth pair is missing if its host end is; a macvlan
                // interface can only be looked for inside.
                let veth_lost =
                    |e: &crate::model::Endpoint| e.host_end().is_some_and(|h| !links.contains(h));
                let look_inside = c.endpoints.iter().any(|e| e.host_end().is_none());
                if !look_inside && !c.endpoints.iter().any(veth_lost) {
                    continue;
                }
                let ns = netns::open(&path).map_err(|e| {
                    crate::error::Error::kernel(format!("open {}", path.display()), e)
                })?;
                let mut inner = Rtnl::open_in(&ns)
                    .map_err(|e| crate::error::Error::kernel("open rtnetlink in container", e))?;
                let lost: Vec<usize> = (0..c.endpoints.len())
                    .filter(|&i| {
                        let e = &c.endpoints[i];
                        match e.host_end() {
                            Some(_) => veth_lost(e),
                            None => inner.link(&e.ifname).ok().flatten().is_none(),
                        }
                    })
                    .collect();
                if lost.is_empty() {
                    continue;
                }
                for i in lost {
                    let net = network::get(db, &c.endpoints[i].network)?;
                    let _ = inner.del_link(&c.endpoints[i].ifname);
                    let _ = shaping::remove(kernel, &c.endpoints[i]);
                    let mut ep = c.endpoints[i].clone();
                    plumb(kernel, journal, (&ns, &mut inner), &c.name, &net, &mut ep)?;
                    c.endpoints[i] = ep;
                }
                db.put_container(&c)?;
                report.repaired.push(c.name);
            }

            // Fast path entries no endpoint holds (the repairs above kept
            // every endpoint's addresses).
            for n in networks.iter().filter(|n| n.fastpath()) {
                let keep: Vec<Ipv4Addr> = containers
                    .iter()
                    .flat_map(|c| &c.endpoints)
                    .filter(|e| e.network == n.name)
                    .flat_map(|e| &e.addresses)
                    .filter_map(|a| match a.addr() {
                        IpAddr::V4(v4) => Some(v4),
                        IpAddr::V6(_) => None,
                    })
                    .collect();
                let host = kernel.host()?;
                let Some(bridge) = host.link(&n.bridge).ok().flatten() else {
                    continue;
                };
                let gone = crate::fastpath::prune(host, bridge.index, &keep)
                    .map_err(|e| crate::error::Error::kernel("prune the fast path", e))?;
                report
                    .fastpath
                    .extend(gone.into_iter().map(|ip| format!("{} {ip}", n.name)));
            }

            // The firewall, exactly as the store says.
            if networks.is_empty() {
                kernel.firewall().drop_table()?;
                kernel.forget_firewall();
            } else {
                let elements = all_elements(db)?;
                kernel.firewall().replace_all(&elements)?;
                // A bridge made anew has an empty ports map.
                kernel.shortcut_published(db, &elements, true);
            }
            Ok(report)
        })
    }

    /// Recreates the firewall table and its elements from the store (after
    /// someone flushed the ruleset).
    pub fn reload_firewall(&mut self) -> Result<()> {
        self.transact(|db, kernel, _| {
            if db.networks()?.is_empty() {
                return Ok(());
            }
            let elements = all_elements(db)?;
            kernel.firewall().replace_all(&elements)
        })
    }
}

/// Of orphaned links, those the kernel will not delete by itself. `rete rm`
/// cuts a container's host end off its bridge and leaves the pair to the
/// kernel's teardown of the namespace, which follows within milliseconds
/// (tens under load): such ends (down, in no bridge) get up to a second to
/// go before they count as left behind, unless the kernel already says
/// their peer's namespace is dying.
fn settle_dropped(kernel: &mut Kernel, mut orphans: Vec<Link>) -> Result<Vec<Link>> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        orphans.retain(|l| !l.peer_dying);
        let cut_off = |l: &Link| !l.up && l.controller.is_none();
        if !orphans.iter().any(cut_off) || Instant::now() >= deadline {
            return Ok(orphans);
        }
        std::thread::sleep(Duration::from_millis(10));
        let present = kernel
            .host()?
            .links()
            .map_err(|e| crate::error::Error::kernel("list links", e))?;
        orphans = present
            .into_iter()
            .filter(|p| orphans.iter().any(|o| o.index == p.index))
            .collect();
    }
}
