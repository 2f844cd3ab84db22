//! Bandwidth limits of an endpoint, on its host-side veth (see crate::tc):
//! the ingress limit is a token bucket on the veth itself, the egress limit
//! one on an ifb device that everything arriving on the veth is redirected
//! through. The qdiscs go with the veth; the ifb is rete's own device, named
//! after the veth, journaled, and removed with the endpoint.

use super::kernel::Kernel;
use crate::error::{Error, Result};
use crate::journal::{Journal, Undo};
use crate::model::{Endpoint, Limit};

/// Refuses limits the kernel would turn into a link that passes nothing.
pub(super) fn check(limit: &Limit, direction: &str) -> Result<()> {
    if limit.rate == 0 {
        return Err(Error::Invalid(format!(
            "{direction} rate must be more than 0 bits per second; leave it out for no limit"
        )));
    }
    if limit.burst == 0 {
        return Err(Error::Invalid(format!(
            "{direction} burst must be more than 0 bits; give at least one MTU (e.g. 12000 bits for 1500 bytes)"
        )));
    }
    Ok(())
}

/// Applies the endpoint's limits to its (just created) host veth.
pub(super) fn apply(kernel: &mut Kernel, journal: &mut Journal, ep: &Endpoint) -> Result<()> {
    let Some(bw) = ep.bandwidth else {
        return Ok(());
    };
    let host = kernel.host()?;
    let veth = host
        .link(&ep.host_ifname)
        .map_err(|e| Error::kernel("list links", e))?
        .ok_or_else(|| {
            Error::kernel(
                format!("find veth {}", ep.host_ifname),
                std::io::Error::from_raw_os_error(libc::ENODEV),
            )
        })?;
    if let Some(limit) = bw.ingress {
        host.shape(veth.index, limit)
            .map_err(|e| Error::kernel(format!("shape ingress on {} (tbf)", ep.host_ifname), e))?;
    }
    if let Some(limit) = bw.egress {
        let ifb = ep.ifb().expect("an egress limit has an ifb");
        journal.record(Undo::Link(ifb.clone()))?;
        let host = kernel.host()?;
        host.add_ifb(&ifb).map_err(|e| {
            Error::kernel(
                format!("create ifb {ifb} for the egress limit (is the ifb module available?)"),
                e,
            )
        })?;
        let index = host
            .link(&ifb)
            .map_err(|e| Error::kernel("list links", e))?
            .map(|l| l.index)
            .ok_or_else(|| {
                Error::kernel(
                    format!("find ifb {ifb}"),
                    std::io::Error::from_raw_os_error(libc::ENODEV),
                )
            })?;
        host.shape(index, limit)
            .map_err(|e| Error::kernel(format!("shape egress on {ifb} (tbf)"), e))?;
        host.redirect_ingress(veth.index, index).map_err(|e| {
            Error::kernel(format!("redirect {} ingress to {ifb}", ep.host_ifname), e)
        })?;
    }
    Ok(())
}

/// Removes the endpoint's ifb, if any (its qdiscs go with the devices).
pub(super) fn remove(kernel: &mut Kernel, ep: &Endpoint) -> Result<()> {
    if let Some(ifb) = ep.ifb() {
        kernel
            .host()?
            .del_link(&ifb)
            .map_err(|e| Error::kernel(format!("delete ifb {ifb}"), e))?;
    }
    Ok(())
}
