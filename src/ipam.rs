//! Address management, as pure functions over a subnet and the addresses in
//! use. Allocation asks about one address at a time, so the store answers
//! with an indexed lookup inside its write transaction instead of loading
//! every lease of the network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::model::Subnet;

/// Parses a CIDR prefix, refusing host bits (`10.0.0.1/24`), as Docker
/// does; `noun` and `example` word the errors.
pub fn parse_prefix(s: &str, noun: &str, example: &str) -> Result<IpNet, String> {
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("\"{s}\" is not a CIDR {noun} such as {example}"))?;
    if net.network() != net.addr() {
        return Err(format!(
            "{noun} \"{s}\" has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Parses a subnet: a prefix with room for a gateway and containers.
pub fn parse_subnet(s: &str) -> Result<IpNet, String> {
    let net = parse_prefix(s, "subnet", "10.1.0.0/24")?;
    let max = match net {
        IpNet::V4(_) => 30,
        IpNet::V6(_) => 126,
    };
    if net.prefix_len() > max {
        return Err(format!("subnet \"{s}\" is too small: use /{max} or larger"));
    }
    Ok(net)
}

/// The first usable address: the default gateway.
pub fn first_host(net: &IpNet) -> IpAddr {
    offset(net.network(), 1)
}

/// Whether `ip` can never be leased in `net`: its network address, or for
/// IPv4 its broadcast address.
pub fn is_reserved(net: &IpNet, ip: IpAddr) -> bool {
    ip == net.network() || (net.addr().is_ipv4() && ip == net.broadcast())
}

/// Validates a subnet definition: gateway and range inside the subnet.
pub fn check_subnet(s: &Subnet) -> Result<(), String> {
    if !s.subnet.contains(&s.gateway) || is_reserved(&s.subnet, s.gateway) {
        return Err(format!(
            "gateway {} is not a usable address of subnet {}",
            s.gateway, s.subnet
        ));
    }
    if let Some(r) = s.ip_range {
        if !s.subnet.contains(&r) {
            return Err(format!("ip range {r} is not inside subnet {}", s.subnet));
        }
    }
    for (what, bound) in [("range start", s.range_start), ("range end", s.range_end)] {
        if let Some(ip) = bound {
            if !s.subnet.contains(&ip) {
                return Err(format!("{what} {ip} is not inside subnet {}", s.subnet));
            }
        }
    }
    if let (Some(a), Some(b)) = (s.range_start, s.range_end) {
        if a > b {
            return Err(format!("range start {a} comes after range end {b}"));
        }
    }
    Ok(())
}

/// Checks an address the user asked for, `leased` or not.
pub fn check_address(s: &Subnet, ip: IpAddr, leased: bool) -> Result<(), String> {
    if !s.subnet.contains(&ip) {
        return Err(format!("address {ip} is outside subnet {}", s.subnet));
    }
    if is_reserved(&s.subnet, ip) || ip == s.gateway {
        return Err(format!(
            "address {ip} is reserved in subnet {} (network, broadcast or gateway)",
            s.subnet
        ));
    }
    if leased {
        return Err(format!("address {ip} is already in use"));
    }
    Ok(())
}

/// The first free address of the subnet's range after `last` (the address
/// this range handed out last), wrapping around to the range's start; from
/// the start (the lowest free address) when `last` is `None` or outside the
/// range. `None` when every address is taken. This is how Podman and
/// host-local allocate: an address just released is the last to be handed
/// out again, and the next address is usually free, so `taken` is asked
/// about one address, not about every lease.
///
/// Every candidate after the first that the scan passes is taken or
/// reserved, so it ends after at most (leases in the range + 4) lookups.
pub fn allocate_after<E>(
    s: &Subnet,
    last: Option<IpAddr>,
    mut taken: impl FnMut(IpAddr) -> Result<bool, E>,
) -> Result<Option<IpAddr>, E> {
    let Some((lo, hi)) = bounds(s) else {
        return Ok(None);
    };
    let start = match last {
        Some(ip) if ip >= lo && ip < hi => offset(ip, 1),
        _ => lo,
    };
    // From `start` to the end, then from the start of the range up to it.
    let mut ip = start;
    loop {
        if !is_reserved(&s.subnet, ip) && ip != s.gateway && !taken(ip)? {
            return Ok(Some(ip));
        }
        ip = if ip == hi { lo } else { offset(ip, 1) };
        if ip == start {
            return Ok(None);
        }
    }
}

/// The name a range's allocation cursor is kept under in its pool: the
/// range, or the subnet, and its start and end when it has them.
pub fn range_key(s: &Subnet) -> String {
    let mut key = s.ip_range.unwrap_or(s.subnet).to_string();
    if s.range_start.is_some() || s.range_end.is_some() {
        let bound = |b: Option<IpAddr>| b.map(|ip| ip.to_string()).unwrap_or_default();
        key = format!("{key} {}-{}", bound(s.range_start), bound(s.range_end));
    }
    key
}

/// The first and last address allocation may hand out: the range (or the
/// subnet) narrowed by its start and end; `None` when that is empty.
fn bounds(s: &Subnet) -> Option<(IpAddr, IpAddr)> {
    let range = s.ip_range.unwrap_or(s.subnet);
    let lo = match s.range_start {
        Some(start) if range.contains(&start) => start,
        _ => range.network(),
    };
    let hi = match s.range_end {
        Some(end) if range.contains(&end) => end,
        Some(end) if end < range.network() => return None,
        _ => range.broadcast(),
    };
    (lo <= hi).then_some((lo, hi))
}

fn offset(ip: IpAddr, n: u128) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(n as u32))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(n))),
    }
}

/// The pool default subnets come from: 10.140.0.0/16 in /24s, clear of
/// Docker's (172.17.0.0/16 and up, 192.168.0.0/16) and Podman's (10.88.0.0/16,
/// 10.89.0.0/16) defaults.
pub const DEFAULT_POOL: &str = "10.140.0.0/16";

/// The first /24 of `pool` that overlaps none of `taken` (other networks'
/// subnets and every route of the host).
pub fn free_subnet(pool: Ipv4Net, taken: &[IpNet]) -> Option<IpNet> {
    pool.subnets(24).ok()?.map(IpNet::V4).find(|candidate| {
        !taken
            .iter()
            .any(|t| t.prefix_len() > 0 && overlaps(candidate, t))
    })
}

/// Whether two subnets share an address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn subnet(s: &str) -> Subnet {
        let net: IpNet = s.parse().unwrap();
        Subnet {
            subnet: net,
            gateway: first_host(&net),
            ip_range: None,
            range_start: None,
            range_end: None,
        }
    }

    #[test]
    fn allocates_lowest_free_skipping_gateway() {
        let s = subnet("10.0.0.0/30");
        let mut used = BTreeSet::new();
        let next = |used: &BTreeSet<IpAddr>| {
            allocate_after::<()>(&s, None, |a| Ok(used.contains(&a))).unwrap()
        };
        let a = next(&used).unwrap();
        assert_eq!(a, "10.0.0.2".parse::<IpAddr>().unwrap());
        used.insert(a);
        assert_eq!(next(&used), None);
    }

    #[test]
    fn allocates_after_the_last_and_wraps_around() {
        let s = subnet("10.0.0.0/29"); // .2 to .6 usable
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let used: BTreeSet<IpAddr> = [ip("10.0.0.3"), ip("10.0.0.6")].into();
        let next = |last| allocate_after::<()>(&s, last, |a| Ok(used.contains(&a))).unwrap();
        assert_eq!(next(Some(ip("10.0.0.2"))), Some(ip("10.0.0.4")));
        assert_eq!(next(Some(ip("10.0.0.5"))), Some(ip("10.0.0.2")));
        assert_eq!(next(Some(ip("10.0.0.7"))), Some(ip("10.0.0.2")));
        assert_eq!(next(Some(ip("192.0.2.1"))), Some(ip("10.0.0.2")));
    }

    #[test]
    fn rejects_host_bits() {
        assert!(parse_subnet("10.0.0.1/24")
            .unwrap_err()
            .contains("10.0.0.0/24"));
        assert!(parse_subnet("fd00::/64").is_ok());
    }

    #[test]
    fn free_subnet_skips_taken() {
        let pool: Ipv4Net = DEFAULT_POOL.parse().unwrap();
        let taken: Vec<IpNet> = vec![
            "10.140.0.0/23".parse().unwrap(),
            "0.0.0.0/0".parse().unwrap(),
        ];
        assert_eq!(
            free_subnet(pool, &taken),
            Some("10.140.2.0/24".parse().unwrap())
        );
    }
}
