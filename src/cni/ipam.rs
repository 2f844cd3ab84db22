//! The `rete-ipam` plugin: rete's address management as the `ipam` of other
//! plugins. Leases live in rete's store under the network's name, keyed by
//! container and interface, so concurrent ADDs never collide.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::Value;

use super::plugin::{dns, range_sets, requested_ips};
use super::wire::{code, CniError, CniResult, IpConfig, NetConf};
use super::{engine_error, Env};
use rete::Engine;

pub fn run(
    engine: &mut Engine,
    env: &Env,
    conf: NetConf,
    version: &str,
) -> Result<Option<Value>, CniError> {
    let sets = range_sets(&conf)?;
    let routers = routers(&conf);
    match env.command.as_str() {
        "ADD" => {
            if sets.is_empty() {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    "ipam has no ranges: give ipam.ranges or ipam.subnet",
                ));
            }
            let owner = owner(env)?;
            let leases = engine
                .lease_from_pool(
                    &conf.name,
                    &owner,
                    &sets,
                    &requested_ips(&conf, env)?,
                    &routers,
                )
                .map_err(engine_error)?;
            let routes = conf
                .ipam
                .as_ref()
                .map(|i| i.routes.clone())
                .unwrap_or_default();
            let result = CniResult {
                interfaces: Vec::new(),
                ips: leases
                    .iter()
                    .map(|l| IpConfig {
                        address: l.address.to_string(),
                        gateway: l.gateway.map(|g| g.to_string()),
                        interface: None,
                    })
                    .collect(),
                routes,
                dns: dns(&conf),
            };
            Ok(Some(result.to_json(version)))
        }
        "DEL" => {
            engine
                .release_from_pool(&conf.name, &owner(env)?)
                .map_err(engine_error)?;
            Ok(None)
        }
        "CHECK" => {
            let owner = owner(env)?;
            if engine
                .pool_leases(&conf.name, &owner)
                .map_err(engine_error)?
                .is_empty()
            {
                return Err(CniError::new(
                    code::UNKNOWN_CONTAINER,
                    format!("{owner} holds no address in \"{}\"", conf.name),
                ));
            }
            Ok(None)
        }
        "STATUS" => {
            if !engine
                .pool_has_room(&conf.name, &sets, &routers)
                .map_err(|e| CniError::new(code::NOT_AVAILABLE, e.to_string()))?
            {
                return Err(CniError::new(
                    code::NOT_AVAILABLE,
                    format!(
                        "no free address left in \"{}\"; an ADD would fail",
                        conf.name
                    ),
                ));
            }
            Ok(None)
        }
        "GC" => {
            let valid: Vec<String> = conf
                .valid_attachments
                .unwrap_or_default()
                .iter()
                .map(|a| format!("{}/{}", a.container_id, a.ifname))
                .collect();
            for o in engine.pool_owners(&conf.name).map_err(engine_error)? {
                if !valid.contains(&o) {
                    engine
                        .release_from_pool(&conf.name, &o)
                        .map_err(engine_error)?;
                }
            }
            Ok(None)
        }
        _ => unreachable!("commands are checked before dispatch"),
    }
}

/// A lease's owner: the attachment, container and interface.
fn owner(env: &Env) -> Result<String, CniError> {
    Ok(format!("{}/{}", env.container()?, env.ifname()?))
}

/// The gateways `ipam.routes` names: routers, not addresses to hand out.
fn routers(conf: &NetConf) -> BTreeSet<IpAddr> {
    conf.ipam
        .iter()
        .flat_map(|i| &i.routes)
        .filter_map(|r| r.gw.as_deref()?.parse().ok())
        .collect()
}
