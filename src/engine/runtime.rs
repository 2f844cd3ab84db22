//! Attachments made by container runtimes (CNI, Podman): the runtime owns the
//! namespace and names the interface; rete plugs it into a network. A
//! container record is made on its first attachment and forgotten after its
//! last.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use super::container::{open_ns, refresh_ports};
use super::endpoint::{attach, unplumb, EndpointRequest};
use super::kernel::Kernel;
use super::network::{self, now, random_id, NetworkRequest};
use super::{publish, shaping, Engine};
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::model::{Bandwidth, Container, Endpoint, Mode, Network};
use crate::names;
use crate::netlink::Rtnl;
use crate::portspec::PortSpec;
use crate::store::Db;

/// One network attachment a runtime asks for.
#[derive(Debug, Clone, Default)]
pub struct AttachRequest {
    /// The container's name in rete (the runtime's container ID or name).
    pub container: String,
    /// The runtime's network namespace.
    pub netns: PathBuf,
    pub network: String,
    /// The interface name inside the namespace.
    pub ifname: String,
    /// Requested addresses (at most one per family is used).
    pub ips: Vec<IpAddr>,
    pub mac: Option<[u8; 6]>,
    pub ports: Vec<PortSpec>,
    /// Further names the container answers to on this network.
    pub aliases: Vec<String>,
    /// Rate limits on the container's traffic through this attachment.
    pub bandwidth: Option<Bandwidth>,
    pub labels: BTreeMap<String, String>,
}

impl Engine {
    /// Creates the network unless one of that name exists; returns it.
    pub fn ensure_network(&mut self, req: NetworkRequest) -> Result<Network> {
        self.transact(|db, kernel, journal| match db.network(&req.name)? {
            Some(n) => Ok(n),
            None => network::create(db, kernel, journal, req),
        })
    }

    /// [`Engine::ensure_network`], `accept` on the network found, and
    /// [`Engine::attach`] to it, in one transaction: a refused attachment
    /// leaves no network behind that this call created. A network found
    /// takes the request's static routes when they differ (checked against
    /// its subnets): the configuration a runtime passes with each
    /// attachment is what new attachments get, as the CNI reference IPAM
    /// plugins read `ipam.routes` on every ADD. Attachments made before
    /// keep the routes they have.
    pub fn ensure_and_attach(
        &mut self,
        net: NetworkRequest,
        accept: impl Fn(&Network) -> Result<()>,
        req: AttachRequest,
    ) -> Result<(Network, Endpoint)> {
        let done = self.healing(|engine| {
            let (net, mut req) = (net.clone(), req.clone());
            engine.transact(|db, kernel, journal| {
                let n = match db.network(&net.name)? {
                    Some(mut n) => {
                        accept(&n)?;
                        if n.routes != net.routes {
                            let subnets: Vec<_> = n.subnets.iter().map(|s| s.subnet).collect();
                            network::check_routes(&net, &subnets)?;
                            n.routes = net.routes.clone();
                            db.put_network(&n)?;
                        }
                        n
                    }
                    None => {
                        let n = network::create(db, kernel, journal, net)?;
                        accept(&n)?;
                        n
                    }
                };
                req.network = n.name.clone();
                let (_, ep) = attach_one(db, kernel, journal, req)?;
                Ok((n, ep))
            })
        })?;
        self.start_resolver_if_needed();
        Ok(done)
    }

    /// Plugs a runtime's namespace into a network. Asking again for an
    /// attachment that exists (same container, network and interface) returns
    /// it unchanged.
    pub fn attach(&mut self, req: AttachRequest) -> Result<(Container, Endpoint)> {
        let done = self.healing(|engine| {
            let req = req.clone();
            engine.transact(|db, kernel, journal| attach_one(db, kernel, journal, req))
        })?;
        self.start_resolver_if_needed();
        Ok(done)
    }

    /// Attaches to several networks at once, all or nothing.
    pub fn attach_all(&mut self, reqs: Vec<AttachRequest>) -> Result<Vec<(Container, Endpoint)>> {
        let done = self.healing(|engine| {
            let reqs = reqs.clone();
            engine.transact(|db, kernel, journal| {
                reqs.into_iter()
                    .map(|r| attach_one(db, kernel, journal, r))
                    .collect()
            })
        })?;
        self.start_resolver_if_needed();
        Ok(done)
    }

    /// Removes the attachment `ifname` of a container; the container record
    /// goes with its last attachment. Idempotent: a missing container or
    /// interface, or a namespace already gone, is not an error.
    pub fn detach(&mut self, container: &str, ifname: &str) -> Result<()> {
        self.transact(|db, kernel, journal| detach_one(db, kernel, journal, container, ifname))
    }

    /// Verifies an attachment against the kernel: the host end of its veth
    /// on the network's bridge, the interface inside with its addresses.
    pub fn check_attachment(&mut self, container: &str, ifname: &str) -> Result<Endpoint> {
        let c = self.container(container)?;
        let ep = c
            .endpoints
            .iter()
            .find(|e| e.ifname == ifname)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "container \"{container}\" has no attachment {ifname}"
                ))
            })?;
        let net = self.network(&ep.network)?;
        let missing =
            |what: String| Error::kernel(what, std::io::Error::from_raw_os_error(libc::ENODEV));
        if let Some(host_end) = ep.host_end() {
            let host = self.kernel.host()?;
            let bridge = host
                .link(&net.bridge)
                .map_err(|e| Error::kernel("list links", e))?
                .ok_or_else(|| {
                    missing(format!(
                        "bridge {} of network \"{}\" is missing",
                        net.bridge, net.name
                    ))
                })?;
            let veth = host
                .link(host_end)
                .map_err(|e| Error::kernel("list links", e))?
                .ok_or_else(|| missing(format!("veth {host_end} of {container} is missing")))?;
            if veth.controller != Some(bridge.index) {
                return Err(missing(format!(
                    "veth {host_end} of {container} is not a port of bridge {}",
                    net.bridge
                )));
            }
        }
        let path = c.netns.clone().unwrap_or_default();
        let ns = open_ns(&path)?;
        let mut inner =
            Rtnl::open_in(&ns).map_err(|e| Error::kernel("open rtnetlink in the namespace", e))?;
        let link = inner
            .link(ifname)
            .map_err(|e| Error::kernel("list links", e))?
            .ok_or_else(|| missing(format!("{ifname} is missing from {}", path.display())))?;
        let have = inner
            .addresses(link.index)
            .map_err(|e| Error::kernel("list addresses", e))?;
        for a in &ep.addresses {
            if !have.contains(a) {
                return Err(missing(format!(
                    "{ifname} of {container} lacks its address {a}"
                )));
            }
        }
        Ok(ep)
    }

    /// The attachments (container, interface) on a network of containers
    /// carrying `label`.
    pub fn attachments(&self, network: &str, label: (&str, &str)) -> Result<Vec<(String, String)>> {
        Ok(self
            .containers()?
            .into_iter()
            .filter(|c| c.labels.get(label.0).map(String::as_str) == Some(label.1))
            .flat_map(|c| {
                c.endpoints
                    .iter()
                    .filter(|e| e.network == network)
                    .map(|e| (c.name.clone(), e.ifname.clone()))
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    /// Whether every subnet of the network has a free address.
    pub fn network_has_room(&self, network: &str) -> Result<bool> {
        let net = self.network(network)?;
        let db = self.store.read();
        for s in &net.subnets {
            if !super::leases::has_room(&db, network, std::slice::from_ref(s), &BTreeSet::new())? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Removes every attachment of a container.
    pub fn detach_all(&mut self, container: &str) -> Result<()> {
        self.transact(|db, kernel, journal| {
            let Some(c) = db.container(container)? else {
                return Ok(());
            };
            for ep in &c.endpoints {
                detach_one(db, kernel, journal, container, &ep.ifname)?;
            }
            if c.endpoints.is_empty() {
                db.delete_container(container)?;
            }
            Ok(())
        })
    }
}

fn attach_one(
    db: &Db,
    kernel: &mut Kernel,
    journal: &mut Journal,
    req: AttachRequest,
) -> Result<(Container, Endpoint)> {
    names::check_ifname(&req.ifname)?;
    if let Some(bw) = &req.bandwidth {
        for (limit, direction) in [(&bw.ingress, "ingress"), (&bw.egress, "egress")] {
            if let Some(l) = limit {
                shaping::check(l, direction)?;
            }
        }
    }
    let net = network::get(db, &req.network)?;
    let mut c = match db.container(&req.container)? {
        Some(c) => {
            if c.netns.as_deref() != Some(req.netns.as_path()) {
                return Err(Error::Conflict(format!(
                    "container \"{}\" is attached in another namespace ({}); detach it first",
                    c.name,
                    c.netns
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )));
            }
            if let Some(ep) = c.endpoints.iter().find(|e| e.ifname == req.ifname) {
                if ep.network == req.network {
                    let ep = ep.clone();
                    return Ok((c, ep));
                }
                return Err(Error::Conflict(format!(
                    "interface {} of container \"{}\" is already attached to network \"{}\"",
                    req.ifname, c.name, ep.network
                )));
            }
            if let Some(ep) = c.endpoints.iter().find(|e| e.network == req.network) {
                return Err(Error::Conflict(format!(
                    "container \"{}\" is already attached to network \"{}\" as {}",
                    c.name, req.network, ep.ifname
                )));
            }
            c
        }
        None => {
            names::check_name("container", &req.container)?;
            Container {
                name: req.container.clone(),
                id: random_id(),
                mode: Mode::Bridge,
                netns: Some(req.netns.clone()),
                owns_netns: false,
                endpoints: Vec::new(),
                ports: Vec::new(),
                hostname: None,
                labels: req.labels.clone(),
                processes: Vec::new(),
                created: now(),
            }
        }
    };
    let ns = open_ns(&req.netns)?;
    let mut inner =
        Rtnl::open_in(&ns).map_err(|e| Error::kernel("open rtnetlink in the namespace", e))?;
    let first = c.endpoints.is_empty();
    let ip4 = req.ips.iter().copied().find(IpAddr::is_ipv4);
    let ip6 = req.ips.iter().copied().find(IpAddr::is_ipv6);
    let endpoint = EndpointRequest {
        net: &net,
        ifname: req.ifname.clone(),
        ip4,
        ip6,
        mac: req.mac,
        aliases: req.aliases.clone(),
        bandwidth: req.bandwidth,
    };
    let ep = attach(db, kernel, journal, (&ns, &mut inner), &c.name, endpoint)?;
    for ip in &req.ips {
        if !ep.addresses.iter().any(|a| a.addr() == *ip) {
            return Err(Error::Invalid(format!(
                "address {ip} is not in any subnet of network \"{}\"",
                net.name
            )));
        }
    }
    let before = publish::elements(&c);
    c.endpoints.push(ep.clone());
    let ports = publish::resolve(db, &c, &req.ports)?;
    for m in &ports {
        db.add_port(m, &c.name)?;
    }
    c.ports.extend(ports);
    refresh_ports(db, kernel, journal, &before, &c)?;
    // lo last, so a refused attachment leaves the namespace as it was.
    if first {
        inner
            .set_up(1)
            .map_err(|e| Error::kernel("bring up lo", e))?;
    }
    db.put_container(&c)?;
    Ok((c, ep))
}

fn detach_one(
    db: &Db,
    kernel: &mut Kernel,
    journal: &mut Journal,
    container: &str,
    ifname: &str,
) -> Result<()> {
    let Some(mut c) = db.container(container)? else {
        return Ok(());
    };
    let Some(pos) = c.endpoints.iter().position(|e| e.ifname == ifname) else {
        return Ok(());
    };
    let before = publish::elements(&c);
    let ep = c.endpoints.remove(pos);
    if c.endpoints.is_empty() {
        c.ports.clear();
    }
    refresh_ports(db, kernel, journal, &before, &c)?;
    unplumb(db, kernel, c.netns.as_deref(), &ep)?;
    db.release_leases(&ep.network, container)?;
    if c.endpoints.is_empty() {
        db.delete_container(container)?;
    } else {
        db.put_container(&c)?;
    }
    Ok(())
}
