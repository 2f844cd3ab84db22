//! Containers: create (a namespace and its endpoints), remove, connect and
//! disconnect networks.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use super::endpoint::{attach, leave_fastpath, unplumb, unplumb_dropped, EndpointRequest};
use super::kernel::Kernel;
use super::network::{self, now, random_id, NetworkRequest, DEFAULT_NETWORK};
use super::{exec, publish, Engine};
use crate::error::{Error, Result};
use crate::journal::{Journal, Undo};
use crate::model::{Container, Mode, Network};
use crate::names;
use crate::netlink::Rtnl;
use crate::netns;
use crate::portspec::PortSpec;
use crate::store::Db;

/// One `--network` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkChoice {
    None,
    Host,
    Container(String),
    Network(String),
}

impl FromStr for NetworkChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => NetworkChoice::None,
            "host" => NetworkChoice::Host,
            _ => match s.strip_prefix("container:") {
                Some("") => {
                    return Err("container: needs a container name, as container:web".into())
                }
                Some(c) => NetworkChoice::Container(c.to_string()),
                None => NetworkChoice::Network(s.to_string()),
            },
        })
    }
}

/// What `rete create` asks for.
#[derive(Debug, Clone, Default)]
pub struct ContainerRequest {
    pub name: String,
    /// Empty: the default network.
    pub networks: Vec<NetworkChoice>,
    pub ip: Option<IpAddr>,
    pub ip6: Option<IpAddr>,
    pub mac: Option<[u8; 6]>,
    pub ports: Vec<PortSpec>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// An existing namespace to attach (a runtime's) instead of a new one.
    pub netns: Option<PathBuf>,
    /// Further names the container answers to on its networks.
    pub aliases: Vec<String>,
}

pub(super) fn get(db: &Db, name: &str) -> Result<Container> {
    db.container(name)?
        .ok_or_else(|| Error::NotFound(format!("container \"{name}\" not found; see `rete ls`")))
}

impl Engine {
    /// Creates a container: its namespace, endpoints and published ports.
    pub fn create_container(&mut self, req: ContainerRequest) -> Result<Container> {
        let c = self.healing(|engine| {
            let req = req.clone();
            engine.transact(|db, kernel, journal| create(db, kernel, journal, req))
        })?;
        self.refresh_etc_files(&c);
        self.start_resolver_if_needed();
        Ok(c)
    }

    /// Removes a container and everything rete made for it, ending the
    /// processes rete started in it. Removing one that does not exist is not
    /// an error (returns false).
    pub fn remove_container(&mut self, name: &str) -> Result<bool> {
        let removed = self.transact(|db, kernel, _| remove(db, kernel, name))?;
        super::etc_files::remove(&self.paths().etc_dir, name);
        Ok(removed)
    }

    /// Attaches a container to one more network.
    pub fn connect(
        &mut self,
        network: &str,
        container: &str,
        ip: Option<IpAddr>,
        aliases: Vec<String>,
    ) -> Result<Container> {
        self.transact(|db, kernel, journal| {
            let mut c = get(db, container)?;
            let net = network::get(db, network)?;
            if c.mode != Mode::Bridge {
                return Err(Error::Invalid(format!(
                    "container \"{container}\" uses network mode {}; only bridge-mode containers join networks",
                    c.mode
                )));
            }
            if c.endpoints.iter().any(|e| e.network == network) {
                return Err(Error::Conflict(format!(
                    "container \"{container}\" is already connected to network \"{network}\""
                )));
            }
            let path = c.netns.clone().expect("bridge containers have a namespace");
            let ns = open_ns(&path)?;
            let mut inner = Rtnl::open_in(&ns).map_err(|e| Error::kernel("open rtnetlink in container", e))?;
            let ifname = (0..)
                .map(|i| format!("eth{i}"))
                .find(|n| !c.endpoints.iter().any(|e| &e.ifname == n))
                .expect("a free interface name");
            let (ip4, ip6) = match ip {
                Some(IpAddr::V6(_)) => (None, ip),
                _ => (ip, None),
            };
            let req = EndpointRequest {
                net: &net,
                ifname,
                ip4,
                ip6,
                mac: None,
                aliases,
                bandwidth: None,
            };
            let ep = attach(db, kernel, journal, (&ns, &mut inner), &c.name, req)?;
            let before = publish::elements(&c);
            c.endpoints.push(ep);
            refresh_ports(db, kernel, journal, &before, &c)?;
            db.put_container(&c)?;
            Ok(c)
        })
        .inspect(|c| {
            self.refresh_etc_files(c);
            self.start_resolver_if_needed();
        })
    }

    /// Detaches a container from a network.
    pub fn disconnect(&mut self, network: &str, container: &str) -> Result<Container> {
        let c =
            self.transact(|db, kernel, journal| detach(db, kernel, journal, container, network))?;
        self.refresh_etc_files(&c);
        Ok(c)
    }
}

fn create(
    db: &Db,
    kernel: &mut Kernel,
    journal: &mut Journal,
    req: ContainerRequest,
) -> Result<Container> {
    names::check_name("container", &req.name)?;
    if db.container(&req.name)?.is_some() {
        return Err(Error::Conflict(format!(
            "container \"{}\" already exists; remove it with `rete rm {}` or choose another name",
            req.name, req.name
        )));
    }
    if let Some(h) = &req.hostname {
        if h.is_empty()
            || h.len() > 64
            || !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(Error::Invalid(format!(
                "invalid hostname \"{h}\": use letters, digits, '-' and '.', at most 64 characters"
            )));
        }
    }
    let mode = mode_of(&req.networks)?;
    if mode != Mode::Bridge {
        if !req.ports.is_empty() {
            return Err(Error::Invalid(format!(
                "-p needs a bridge network; network mode {mode} has no ports of its own to publish"
            )));
        }
        if req.ip.is_some() || req.ip6.is_some() || req.mac.is_some() {
            return Err(Error::Invalid(format!(
                "--ip, --ip6 and --mac need a bridge network, not network mode {mode}"
            )));
        }
    }
    if let Some(IpAddr::V6(_)) = req.ip {
        return Err(Error::Invalid(
            "--ip takes an IPv4 address; use --ip6 for IPv6".into(),
        ));
    }
    if let Some(IpAddr::V4(_)) = req.ip6 {
        return Err(Error::Invalid(
            "--ip6 takes an IPv6 address; use --ip for IPv4".into(),
        ));
    }
    let mut c = Container {
        name: req.name.clone(),
        id: random_id(),
        mode: mode.clone(),
        netns: None,
        owns_netns: false,
        endpoints: Vec::new(),
        ports: Vec::new(),
        hostname: req.hostname.clone(),
        labels: req.labels.clone(),
        processes: Vec::new(),
        created: now(),
    };
    match &mode {
        Mode::Host => {}
        Mode::Container(other) => {
            let o = db.container(other)?.ok_or_else(|| {
                Error::NotFound(format!(
                    "container \"{other}\" (from --network container:{other}) not found; create it first"
                ))
            })?;
            if let Mode::Container(root) = &o.mode {
                c.mode = Mode::Container(root.clone());
            } else if o.mode == Mode::Host {
                c.mode = Mode::Host;
            }
            c.netns = o.netns.clone();
        }
        Mode::None | Mode::Bridge => {
            let networks = resolve_networks(db, kernel, journal, &req.networks)?;
            let ns = sandbox(kernel, journal, &mut c, req.netns.as_deref())?;
            let mut inner =
                Rtnl::open_in(&ns).map_err(|e| Error::kernel("open rtnetlink in container", e))?;
            inner
                .set_up(1)
                .map_err(|e| Error::kernel("bring up lo", e))?;
            for (i, net) in networks.iter().enumerate() {
                let (ip4, ip6, mac) = if i == 0 {
                    (req.ip, req.ip6, req.mac)
                } else {
                    (None, None, None)
                };
                let req = EndpointRequest {
                    net,
                    ifname: format!("eth{i}"),
                    ip4,
                    ip6,
                    mac,
                    aliases: req.aliases.clone(),
                    bandwidth: None,
                };
                let ep = attach(db, kernel, journal, (&ns, &mut inner), &c.name, req)?;
                c.endpoints.push(ep);
            }
            if let Some(ip) = req.ip.or(req.ip6) {
                if networks.is_empty() {
                    unreachable!("mode checked above");
                }
                if !c.endpoints[0].addresses.iter().any(|a| a.addr() == ip) {
                    return Err(Error::Invalid(format!(
                        "address {ip} is not in any subnet of network \"{}\"",
                        networks[0].name
                    )));
                }
            }
            c.ports = publish::resolve(db, &c, &req.ports)?;
            for m in &c.ports {
                db.add_port(m, &c.name)?;
            }
            let elements = publish::elements(&c);
            if !elements.is_empty() {
                journal.record(Undo::Elements(elements.clone()))?;
                kernel.firewall_add(db, &elements)?;
            }
        }
    }
    db.put_container(&c)?;
    Ok(c)
}

/// The network mode a list of `--network` values means.
fn mode_of(choices: &[NetworkChoice]) -> Result<Mode> {
    let special = choices
        .iter()
        .find(|c| !matches!(c, NetworkChoice::Network(_)));
    match special {
        Some(s) if choices.len() > 1 => Err(Error::Invalid(format!(
            "network mode {} cannot be combined with other --network values",
            match s {
                NetworkChoice::None => "none".to_string(),
                NetworkChoice::Host => "host".to_string(),
                NetworkChoice::Container(c) => format!("container:{c}"),
                NetworkChoice::Network(_) => unreachable!(),
            }
        ))),
        Some(NetworkChoice::None) => Ok(Mode::None),
        Some(NetworkChoice::Host) => Ok(Mode::Host),
        Some(NetworkChoice::Container(c)) => Ok(Mode::Container(c.clone())),
        _ => Ok(Mode::Bridge),
    }
}

/// The bridge networks named, the default one (created on first use) when
/// none is.
fn resolve_networks(
    db: &Db,
    kernel: &mut Kernel,
    journal: &mut Journal,
    choices: &[NetworkChoice],
) -> Result<Vec<Network>> {
    if choices == [NetworkChoice::None] {
        return Ok(Vec::new());
    }
    if choices.is_empty() {
        return Ok(vec![match db.network(DEFAULT_NETWORK)? {
            Some(n) => n,
            None => network::create(
                db,
                kernel,
                journal,
                NetworkRequest {
                    name: DEFAULT_NETWORK.into(),
                    ..Default::default()
                },
            )?,
        }]);
    }
    let mut out: Vec<Network> = Vec::new();
    for choice in choices {
        let NetworkChoice::Network(name) = choice else {
            unreachable!("mode checked")
        };
        if out.iter().any(|n| &n.name == name) {
            return Err(Error::Invalid(format!("network \"{name}\" is named twice")));
        }
        out.push(network::get(db, name)?);
    }
    Ok(out)
}

/// The container's namespace: the runtime's, or a new one pinned under the
/// netns dir by the container's name.
fn sandbox(
    kernel: &Kernel,
    journal: &mut Journal,
    c: &mut Container,
    external: Option<&std::path::Path>,
) -> Result<File> {
    if let Some(path) = external {
        let ns = open_ns(path)?;
        c.netns = Some(path.to_path_buf());
        return Ok(ns);
    }
    let path = kernel.paths.netns_dir.join(&c.name);
    if path.exists() {
        return Err(Error::Conflict(format!(
            "a network namespace already exists at {}; remove it (`ip netns delete {}`) or choose another name",
            path.display(),
            c.name
        )));
    }
    journal.record(Undo::Netns(path.clone()))?;
    let ns = netns::create(&path)
        .map_err(|e| Error::kernel(format!("create network namespace {}", path.display()), e))?;
    c.netns = Some(path);
    c.owns_netns = true;
    Ok(ns)
}

pub(super) fn open_ns(path: &std::path::Path) -> Result<File> {
    netns::open(path).map_err(|e| {
        Error::NotFound(format!(
            "network namespace {} cannot be opened ({e}); it may have been removed: run `rete gc`",
            path.display()
        ))
    })
}

/// Removes one endpoint: its veth, leases and the port elements that led to it.
pub(super) fn detach(
    db: &Db,
    kernel: &mut Kernel,
    journal: &mut Journal,
    container: &str,
    network: &str,
) -> Result<Container> {
    let mut c = get(db, container)?;
    let Some(pos) = c.endpoints.iter().position(|e| e.network == network) else {
        return Err(Error::NotFound(format!(
            "container \"{container}\" is not connected to network \"{network}\""
        )));
    };
    let before = publish::elements(&c);
    let ep = c.endpoints.remove(pos);
    refresh_ports(db, kernel, journal, &before, &c)?;
    unplumb(db, kernel, c.netns.as_deref(), &ep)?;
    db.release_leases(network, container)?;
    db.put_container(&c)?;
    Ok(c)
}

/// After endpoints changed, moves the container's port elements to its new
/// addresses.
pub(super) fn refresh_ports(
    db: &Db,
    kernel: &mut Kernel,
    journal: &mut Journal,
    before: &[crate::firewall::Element],
    c: &Container,
) -> Result<()> {
    let after = publish::elements(c);
    if before == after.as_slice() {
        return Ok(());
    }
    kernel.firewall_delete(db, before)?;
    journal.record(Undo::Elements(after.clone()))?;
    kernel.firewall_add(db, &after)
}

fn remove(db: &Db, kernel: &mut Kernel, name: &str) -> Result<bool> {
    let Some(c) = db.container(name)? else {
        return Ok(false);
    };
    let dependents = db.sharing_namespace_of(name)?;
    if !dependents.is_empty() {
        return Err(Error::InUse(format!(
            "container \"{name}\" shares its network namespace with {}; remove them first",
            dependents.join(", ")
        )));
    }
    exec::end_processes(&c);
    let elements = publish::elements(&c);
    if !elements.is_empty() {
        kernel.firewall_delete(db, &elements)?;
    }
    // The namespace goes before the veths: a removal killed in between then
    // leaves either a whole container or one whose namespace is gone, which
    // `rete gc` releases; never a listed container without its veth.
    let dropped = match (&c.netns, c.owns_netns) {
        (Some(path), true) => {
            // Off the fast path while the host ends are still ports.
            for ep in &c.endpoints {
                leave_fastpath(db, kernel, ep)?;
            }
            // Held open while its veths go, from the inside.
            let ns = netns::open(path).ok();
            netns::remove(path)
                .map_err(|e| Error::kernel(format!("remove namespace {}", path.display()), e))?;
            Some(ns)
        }
        _ => None,
    };
    for ep in &c.endpoints {
        match &dropped {
            Some(ns) => unplumb_dropped(kernel, ns.as_ref(), ep)?,
            None => unplumb(db, kernel, c.netns.as_deref(), ep)?,
        }
    }
    db.delete_container(name)?;
    Ok(true)
}
