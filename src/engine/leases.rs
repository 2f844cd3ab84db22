//! IPAM over the store, inside a write transaction: allocation asks the
//! leases' primary key about one address at a time and starts after the
//! address its range handed out last, so leasing costs a few lookups, not a
//! read of every lease of the network.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::ipam;
use crate::model::Subnet;
use crate::store::Db;

/// The next free address of `range` in `pool` (a network, or a CNI IPAM
/// pool), never one of `routers`; recorded as the range's last, so the one
/// after it comes next. `None` when the range is full.
pub(super) fn allocate(
    db: &Db,
    pool: &str,
    range: &Subnet,
    routers: &BTreeSet<IpAddr>,
) -> Result<Option<IpAddr>> {
    let ip = next_free(db, pool, range, routers)?;
    if let Some(ip) = ip {
        db.set_last_allocated(pool, &ipam::range_key(range), ip)?;
    }
    Ok(ip)
}

/// Whether one of `ranges` (alternatives) of `pool` has a free address
/// that is not one of `routers`.
pub(super) fn has_room(
    db: &Db,
    pool: &str,
    ranges: &[Subnet],
    routers: &BTreeSet<IpAddr>,
) -> Result<bool> {
    for range in ranges {
        if next_free(db, pool, range, routers)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn next_free(
    db: &Db,
    pool: &str,
    range: &Subnet,
    routers: &BTreeSet<IpAddr>,
) -> Result<Option<IpAddr>> {
    let last = db.last_allocated(pool, &ipam::range_key(range))?;
    ipam::allocate_after(range, last, |ip| {
        Ok::<_, Error>(routers.contains(&ip) || db.is_leased(pool, ip)?)
    })
}
