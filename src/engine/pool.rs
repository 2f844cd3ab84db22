//! Address pools without networks: rete's IPAM serving other plugins (the
//! `rete-ipam` CNI plugin under the reference bridge or macvlan). A pool is
//! named (the CNI network name) and its leases live in the same table as
//! network leases, so two processes never hand out one address twice.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::leases;
use super::Engine;
use crate::error::{Error, Result};
use crate::ipam;
use crate::model::Subnet;

/// One leased address with the gateway of its range.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolLease {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

impl Engine {
    /// Leases one address from each range set (a set lists alternatives of
    /// one family, tried in order) to `owner`. Asking again returns what the
    /// owner holds. `requested` addresses are taken where a range holds them;
    /// `routers` (the gateways of the configuration's routes) are never
    /// handed out otherwise.
    pub fn lease_from_pool(
        &mut self,
        pool: &str,
        owner: &str,
        range_sets: &[Vec<Subnet>],
        requested: &[IpAddr],
        routers: &BTreeSet<IpAddr>,
    ) -> Result<Vec<PoolLease>> {
        self.transact(|db, _, _| {
            let held = db.leases_of(pool, owner)?;
            let mut out = Vec::new();
            for set in range_sets {
                for r in set {
                    ipam::check_subnet(r).map_err(Error::Invalid)?;
                }
                if let Some((r, ip)) = set.iter().find_map(|r| {
                    held.iter()
                        .find(|ip| r.subnet.contains(*ip))
                        .map(|ip| (r, *ip))
                }) {
                    out.push(lease_of(r, ip));
                    continue;
                }
                let wanted = requested
                    .iter()
                    .find_map(|ip| set.iter().find(|r| r.subnet.contains(ip)).map(|r| (r, *ip)));
                let (range, ip) = match wanted {
                    Some((r, ip)) => {
                        let leased = db.is_leased(pool, ip)?;
                        ipam::check_address(r, ip, leased).map_err(|why| {
                            if leased {
                                Error::Conflict(format!("{why} in pool \"{pool}\""))
                            } else {
                                Error::Invalid(why)
                            }
                        })?;
                        (r, ip)
                    }
                    None => first_free(db, pool, set, routers)?.ok_or_else(|| {
                        Error::Exhausted(format!(
                            "pool \"{pool}\" has no free address left in {}",
                            set.iter()
                                .map(|r| r.subnet.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?,
                };
                db.add_lease(pool, ip, owner)?;
                out.push(lease_of(range, ip));
            }
            for ip in requested {
                if !out.iter().any(|l| l.address.addr() == *ip) {
                    return Err(Error::Invalid(format!(
                        "requested address {ip} is in none of the pool's ranges"
                    )));
                }
            }
            Ok(out)
        })
    }

    /// Releases what `owner` holds in the pool; idempotent.
    pub fn release_from_pool(&mut self, pool: &str, owner: &str) -> Result<()> {
        self.transact(|db, _, _| db.release_leases(pool, owner))
    }

    /// The addresses `owner` holds in the pool.
    pub fn pool_leases(&self, pool: &str, owner: &str) -> Result<Vec<IpAddr>> {
        self.store.read().leases_of(pool, owner)
    }

    /// Everyone holding addresses in the pool.
    pub fn pool_owners(&self, pool: &str) -> Result<Vec<String>> {
        self.store.read().lease_owners(pool)
    }

    /// Whether a set of ranges still has a free address that is not one of
    /// `routers` (for CNI STATUS).
    pub fn pool_has_room(
        &self,
        pool: &str,
        range_sets: &[Vec<Subnet>],
        routers: &BTreeSet<IpAddr>,
    ) -> Result<bool> {
        let db = self.store.read();
        for set in range_sets {
            if !leases::has_room(&db, pool, set, routers)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The next free address of the first range of `set` that has one.
fn first_free<'a>(
    db: &crate::store::Db,
    pool: &str,
    set: &'a [Subnet],
    routers: &BTreeSet<IpAddr>,
) -> Result<Option<(&'a Subnet, IpAddr)>> {
    for r in set {
        if let Some(ip) = leases::allocate(db, pool, r, routers)? {
            return Ok(Some((r, ip)));
        }
    }
    Ok(None)
}

fn lease_of(r: &Subnet, ip: IpAddr) -> PoolLease {
    PoolLease {
        address: IpNet::new(ip, r.subnet.prefix_len()).expect("prefix from a subnet"),
        gateway: Some(r.gateway),
    }
}
