//! Published ports: resolving `-p` specs against the store's claims, and the
//! firewall elements that implement them.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{Error, Result};
use crate::firewall::Element;
use crate::model::{Container, PortMapping};
use crate::portspec::PortSpec;
use crate::store::Db;

/// Host ports picked when none is given: the kernel's default ephemeral
/// range, as Docker uses.
const AUTO_PORTS: std::ops::RangeInclusive<u16> = 32768..=60999;

/// Resolves specs into one mapping per host address family and port,
/// refusing claims that another container holds.
pub(super) fn resolve(db: &Db, c: &Container, specs: &[PortSpec]) -> Result<Vec<PortMapping>> {
    let has = |v4: bool| target(c, v4).is_some();
    if !specs.is_empty() && !has(true) && !has(false) {
        return Err(Error::Invalid(format!(
            "container \"{}\" is on no bridge network, so it has no port to publish through the host; macvlan containers are reached at their own addresses",
            c.name
        )));
    }
    let mut out: Vec<PortMapping> = Vec::new();
    for spec in specs {
        let host_ips: Vec<IpAddr> = match spec.host_ip {
            Some(ip) => {
                if !has(ip.is_ipv4()) {
                    return Err(Error::Invalid(format!(
                        "cannot publish on {ip}: container \"{}\" has no {} address",
                        c.name,
                        if ip.is_ipv4() { "IPv4" } else { "IPv6" }
                    )));
                }
                vec![ip]
            }
            None => {
                let mut v = Vec::new();
                if has(true) {
                    v.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                }
                if has(false) {
                    v.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                }
                v
            }
        };
        let n = spec.container_ports.len() as u16;
        for i in 0..n {
            let container_port = spec.container_ports.start + i;
            let candidates: Vec<u16> = match spec.host_ports {
                Some(r) if r.len() == spec.container_ports.len() => vec![r.start + i],
                Some(r) => (r.start..=r.end).collect(),
                None => AUTO_PORTS.collect(),
            };
            let host_port = pick(db, &out, &host_ips, spec, &candidates)?;
            for ip in &host_ips {
                out.push(PortMapping {
                    host_ip: *ip,
                    host_port,
                    container_port,
                    protocol: spec.protocol,
                });
            }
        }
    }
    Ok(out)
}

/// The first candidate port free on every address in `ips`; with a single
/// candidate, a clear error naming who holds it.
fn pick(
    db: &Db,
    taken_here: &[PortMapping],
    ips: &[IpAddr],
    spec: &PortSpec,
    candidates: &[u16],
) -> Result<u16> {
    let mut used = BTreeSet::new();
    if candidates.len() > 1 {
        for ip in ips {
            used.extend(db.used_ports(&spec.protocol.to_string(), *ip)?);
        }
    }
    'next: for &port in candidates {
        if used.contains(&port) {
            continue;
        }
        for ip in ips {
            let m = PortMapping {
                host_ip: *ip,
                host_port: port,
                container_port: 0,
                protocol: spec.protocol,
            };
            let clash_here = taken_here.iter().any(|t| {
                t.protocol == m.protocol
                    && t.host_port == port
                    && t.host_ip.is_ipv4() == ip.is_ipv4()
                    && (t.host_ip == *ip || t.host_ip.is_unspecified() || ip.is_unspecified())
            });
            let holder = db.port_holder(&m)?;
            if clash_here || holder.is_some() {
                if candidates.len() == 1 {
                    let what = match ip {
                        IpAddr::V6(a) => format!("[{a}]:{port}/{}", spec.protocol),
                        a => format!("{a}:{port}/{}", spec.protocol),
                    };
                    return Err(Error::Conflict(match holder {
                        Some(h) => format!(
                            "host port {what} is already published by container \"{h}\"; choose another host port or remove {h}"
                        ),
                        None => format!("host port {what} is published twice in this request"),
                    }));
                }
                continue 'next;
            }
        }
        return Ok(port);
    }
    Err(Error::Exhausted(format!(
        "no free host port for {}/{} in {}-{}",
        spec.container_ports.start,
        spec.protocol,
        candidates.first().copied().unwrap_or(0),
        candidates.last().copied().unwrap_or(0)
    )))
}

/// The address published ports of one family lead to: the container's
/// first address of that family behind a bridge (the host cannot reach a
/// macvlan interface on its own parent).
fn target(c: &Container, v4: bool) -> Option<IpAddr> {
    c.endpoints
        .iter()
        .filter(|e| e.host_end().is_some())
        .flat_map(|e| e.addresses.iter())
        .map(|a| a.addr())
        .find(|a| a.is_ipv4() == v4)
}

/// The firewall elements of a container's published ports.
pub(super) fn elements(c: &Container) -> Vec<Element> {
    c.ports
        .iter()
        .filter_map(|m| {
            target(c, m.host_ip.is_ipv4()).map(|t| Element::Publish {
                host_ip: m.host_ip,
                protocol: m.protocol,
                host_port: m.host_port,
                target: t,
                target_port: m.container_port,
            })
        })
        .collect()
}
