//! `setup` and `teardown`: a container's networks, on the engine.
//!
//! Podman does its own IPAM and passes the addresses (`static_ips`); rete
//! makes the network from Podman's configuration on first use and plugs the
//! namespace in. Like netavark, which deletes a bridge with its last
//! container, rete removes a network it made for Podman once its last
//! container is torn down, so a network Podman removed or changed does not
//! linger.

use std::collections::BTreeMap;
use std::path::Path;

use rete::model;
use rete::{Engine, Error};

use super::translate::{
    attach_requests, bridge_options, network_info, network_request, same_network, status_block,
    FRONTEND,
};
use super::wire::{Network, SetupRequest, StatusBlock};
use super::Failure;

/// Attaches the container to every network of the request, all or nothing;
/// returns the status block of each network.
pub fn setup(
    engine: &mut Engine,
    netns: &Path,
    req: &SetupRequest,
) -> Result<BTreeMap<String, StatusBlock>, Failure> {
    if !netns.exists() {
        return Err(Failure(format!(
            "invalid namespace path {}: no such file",
            netns.display()
        )));
    }
    // Everything is checked before anything is made.
    let requests = attach_requests(req, netns)?;
    for (name, _) in &req.networks.0 {
        network_request(network_info(req, name)?)?;
    }
    let mut attempts = 0;
    let (networks, attached) = loop {
        let mut networks = BTreeMap::new();
        let outcome = (|| {
            for (name, _) in &req.networks.0 {
                networks.insert(name.clone(), ensure(engine, network_info(req, name)?)?);
            }
            Ok(engine.attach_all(requests.clone())?)
        })();
        match outcome {
            Ok(attached) => break (networks, attached),
            // A concurrent teardown removed a network it saw unused between
            // our ensure and attach: make it again.
            Err(SetupError::Engine(Error::NotFound(_))) if attempts < 2 => attempts += 1,
            Err(e) => {
                // Leave no network behind that only this setup wanted.
                for name in networks.keys() {
                    let _ = remove_if_unused(engine, name);
                }
                return Err(e.into());
            }
        }
    };
    // Podman passes every interface's old MAC when it sets a running
    // container up again, which is what `podman network reload` does after
    // a firewall reload flushed the rules: restore rete's table from the
    // store then. (A container without published ports adds no element that
    // would notice the table is gone.)
    if req.networks.0.iter().all(|(_, p)| p.static_mac.is_some()) {
        engine.reload_firewall()?;
    }
    Ok(attached
        .iter()
        .map(|(_, ep)| {
            let net = &networks[&ep.network];
            (ep.network.clone(), status_block(net, ep))
        })
        .collect())
}

/// A failure of one try at attaching, kept apart so that a network gone
/// missing under us can be retried.
enum SetupError {
    Engine(Error),
    Other(Failure),
}

impl From<Error> for SetupError {
    fn from(e: Error) -> Self {
        SetupError::Engine(e)
    }
}

impl From<Failure> for SetupError {
    fn from(f: Failure) -> Self {
        SetupError::Other(f)
    }
}

impl From<SetupError> for Failure {
    fn from(e: SetupError) -> Self {
        match e {
            SetupError::Engine(e) => e.into(),
            SetupError::Other(f) => f,
        }
    }
}

/// Detaches the container from every network of the request; idempotent.
/// Networks made for Podman that no one uses any more go too.
pub fn teardown(engine: &mut Engine, req: &SetupRequest) -> Result<(), Failure> {
    for (_, per) in &req.networks.0 {
        engine.detach(&req.container_id, &per.interface_name)?;
    }
    for (name, _) in &req.networks.0 {
        remove_if_unused(engine, name)?;
    }
    Ok(())
}

/// The rete network for Podman's configuration: the existing one if it
/// matches, else made (again).
fn ensure(engine: &mut Engine, n: &Network) -> Result<model::Network, Failure> {
    let want = network_request(n)?;
    match engine.network(&n.name) {
        // A bridge the kernel lost (a reboot, or a rootless namespace made
        // anew) is rebuilt by the attachment itself.
        Ok(have) if same_network(&have, &want) => return Ok(have),
        Ok(have) => {
            if !made_for_podman(&have) {
                return Err(Failure(format!(
                    "rete already has a network \"{}\" ({}) that differs from Podman's ({}); remove it with `rete network rm {}` or give the Podman network another name",
                    n.name,
                    describe_model(&have),
                    describe_wire(n),
                    n.name
                )));
            }
            match engine.remove_network(&n.name, false) {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(Error::InUse(m)) => {
                    return Err(Failure(format!(
                        "Podman's network \"{}\" changed ({}, was {}), but {m}",
                        n.name,
                        describe_wire(n),
                        describe_model(&have)
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(engine.ensure_network(want)?)
}

fn remove_if_unused(engine: &mut Engine, name: &str) -> Result<(), Failure> {
    let net = match engine.network(name) {
        Ok(n) => n,
        Err(Error::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // The common case, a network other containers still use, is settled
    // without a write transaction.
    if !made_for_podman(&net) || engine.network_in_use(name)? {
        return Ok(());
    }
    match engine.remove_network(name, false) {
        Ok(()) | Err(Error::InUse(_)) | Err(Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn made_for_podman(n: &model::Network) -> bool {
    n.labels.get(FRONTEND.0).map(String::as_str) == Some(FRONTEND.1)
}

fn describe_model(n: &model::Network) -> String {
    let subnets: Vec<String> = n
        .subnets
        .iter()
        .map(|s| format!("{} via {}", s.subnet, s.gateway))
        .collect();
    let flags = flags(n.internal, n.isolate, n.dns, n.mtu);
    format!("bridge {}, subnets {}{flags}", n.bridge, subnets.join(", "))
}

fn describe_wire(n: &Network) -> String {
    let subnets: Vec<String> = n
        .subnets
        .iter()
        .map(|s| match s.gateway {
            Some(g) => format!("{} via {g}", s.subnet),
            None => s.subnet.to_string(),
        })
        .collect();
    let options = bridge_options(n).unwrap_or_default();
    let flags = flags(n.internal, options.isolate, n.dns_enabled, options.mtu);
    format!(
        "bridge {}, subnets {}{flags}",
        n.network_interface.as_deref().unwrap_or("(any)"),
        subnets.join(", ")
    )
}

fn flags(internal: bool, isolate: bool, dns: bool, mtu: Option<u32>) -> String {
    let mut out = String::new();
    for (on, what) in [(internal, "internal"), (isolate, "isolated"), (dns, "dns")] {
        if on {
            out.push_str(", ");
            out.push_str(what);
        }
    }
    if let Some(m) = mtu {
        out.push_str(&format!(", mtu {m}"));
    }
    out
}
