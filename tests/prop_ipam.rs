//! Properties of address management over random subnets, gateways, ranges
//! and in-use sets: allocation never hands out a duplicate, the gateway, the
//! network or (IPv4) broadcast address, or an address outside the range;
//! it hands out the lowest free address, or after a cursor the first free
//! one past it (wrapping around); it runs dry after exactly as many
//! addresses as the range has usable; and `check_address` accepts exactly
//! the free usable addresses of the subnet. Pure functions: no root needed.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::prelude::*;
use rete::ipam;
use rete::model::Subnet;

/// The n-th address of `net`.
fn nth(net: &IpNet, n: u128) -> IpAddr {
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(n as u32))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(n))),
    }
}

fn size(net: &IpNet) -> u128 {
    1u128 << (net.max_prefix_len() - net.prefix_len())
}

/// Whether the subnet's rules forbid leasing `ip` at all.
fn reserved(s: &Subnet, ip: IpAddr) -> bool {
    ip == s.subnet.network() || ip == s.gateway || (ip.is_ipv4() && ip == s.subnet.broadcast())
}

/// The lowest free address: allocation without a cursor.
fn lowest_free(s: &Subnet, used: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    ipam::allocate_after::<()>(s, None, |ip| Ok(used.contains(&ip))).unwrap()
}

/// Every address that may be leased automatically, lowest first.
fn usable(s: &Subnet) -> Vec<IpAddr> {
    let range = s.ip_range.unwrap_or(s.subnet);
    (0..size(&range))
        .map(|i| nth(&range, i))
        .filter(|ip| !reserved(s, *ip))
        .collect()
}

/// A small subnet (at most 256 addresses) of either family, a usable
/// gateway in it, and maybe an ip range inside it.
fn subnet() -> impl Strategy<Value = Subnet> {
    let v4 = (any::<u32>(), 24u8..=30).prop_map(|(a, p)| {
        IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), p)
            .unwrap()
            .trunc()
    });
    let v6 = (any::<u128>(), 120u8..=126).prop_map(|(a, p)| {
        IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), p)
            .unwrap()
            .trunc()
    });
    (
        prop_oneof![v4, v6],
        any::<u128>(),
        any::<bool>(),
        any::<u128>(),
        0u8..=8,
    )
        .prop_map(|(net, gw, first_gw, r, extra)| {
            let n = size(&net);
            let is_v4 = net.addr().is_ipv4();
            // Gateways from 1 to the last usable address.
            let last = if is_v4 { n - 2 } else { n - 1 };
            let gateway = if first_gw {
                ipam::first_host(&net)
            } else {
                nth(&net, 1 + gw % last)
            };
            let range_prefix = (net.prefix_len() + extra).min(net.max_prefix_len());
            let ip_range =
                (extra > 0).then(|| IpNet::new(nth(&net, r % n), range_prefix).unwrap().trunc());
            Subnet {
                subnet: net,
                gateway,
                ip_range,
                range_start: None,
                range_end: None,
            }
        })
}

/// A subnet with some of its addresses (and of its neighbourhood) in use.
fn subnet_and_used() -> impl Strategy<Value = (Subnet, BTreeSet<IpAddr>)> {
    subnet().prop_flat_map(|s| {
        let n = size(&s.subnet);
        // Offsets from just below the subnet to just past it.
        let picks = proptest::collection::vec(0..n + 4, 0..(n as usize + 8));
        (Just(s), picks).prop_map(|(s, picks)| {
            let used = picks
                .into_iter()
                .filter_map(|k| {
                    let base = match s.subnet.network() {
                        IpAddr::V4(a) => u128::from(u32::from(a)),
                        IpAddr::V6(a) => u128::from(a),
                    };
                    let v = (base + k).checked_sub(2)?;
                    Some(match s.subnet {
                        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(v).ok()?)),
                        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
                    })
                })
                .collect();
            (s, used)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The generator itself yields valid subnets.
    #[test]
    fn generated_subnets_are_valid(s in subnet()) {
        prop_assert_eq!(ipam::check_subnet(&s), Ok(()));
    }

    /// Allocating until the range runs dry: each address is new, usable and
    /// in the range, the lowest free one, and the count is exactly the
    /// usable count.
    #[test]
    fn allocation_exhausts_the_range_exactly(s in subnet()) {
        let range = s.ip_range.unwrap_or(s.subnet);
        let expected = usable(&s);
        let mut used = BTreeSet::new();
        for want in &expected {
            let ip = lowest_free(&s, &used);
            prop_assert_eq!(ip, Some(*want), "range {} used {}", range, used.len());
            let ip = ip.unwrap();
            prop_assert!(range.contains(&ip) && s.subnet.contains(&ip));
            prop_assert!(!reserved(&s, ip), "{} is reserved in {}", ip, s.subnet);
            prop_assert!(used.insert(ip), "{} handed out twice", ip);
        }
        prop_assert_eq!(lowest_free(&s, &used), None, "after {} allocations", used.len());
        prop_assert_eq!(used.len(), expected.len());
    }

    /// With arbitrary addresses in use (also outside the range or the
    /// subnet, as explicit --ip leases are), allocation returns the lowest
    /// free usable address of the range, or None when there is none.
    #[test]
    fn allocation_returns_the_lowest_free_address((s, used) in subnet_and_used()) {
        let want = usable(&s).into_iter().find(|ip| !used.contains(ip));
        let got = lowest_free(&s, &used);
        prop_assert_eq!(got, want, "subnet {} range {:?} gateway {}", s.subnet, s.ip_range, s.gateway);
    }

    /// After a cursor (the range's last allocation, anywhere or nowhere),
    /// allocation returns the first free usable address past it in the
    /// range's order, wrapping to the start, and asks about one address per
    /// candidate it passes: no more lookups than taken addresses + 4.
    #[test]
    fn allocation_after_a_cursor_takes_the_next_free_address(
        (s, used) in subnet_and_used(),
        k in 0u128..300,
    ) {
        let order = usable(&s);
        let range = s.ip_range.unwrap_or(s.subnet);
        let last = nth(&s.subnet, k % (size(&s.subnet) + 2));
        // Where the scan starts: just past the cursor when it lies in the range.
        let cut = if range.contains(&last) {
            order.iter().position(|ip| *ip > last).unwrap_or(order.len())
        } else {
            0
        };
        let want = order[cut..]
            .iter()
            .chain(&order[..cut])
            .find(|ip| !used.contains(ip))
            .copied();
        let mut asked = 0usize;
        let got: Result<_, ()> = ipam::allocate_after(&s, Some(last), |ip| {
            asked += 1;
            Ok(used.contains(&ip))
        });
        prop_assert_eq!(got, Ok(want), "subnet {} range {:?} after {}", s.subnet, s.ip_range, last);
        prop_assert!(asked <= used.len() + 4, "{} lookups with {} taken", asked, used.len());
    }

    /// Allocating with the cursor moved each time hands out every usable
    /// address once, in order, then runs dry; releasing one makes it the
    /// next, however far back it lies.
    #[test]
    fn allocation_with_a_cursor_cycles_the_range(s in subnet(), pick in any::<prop::sample::Index>()) {
        let order = usable(&s);
        let mut used = BTreeSet::new();
        let mut last = None;
        for want in &order {
            let got: Result<_, ()> = ipam::allocate_after(&s, last, |ip| Ok(used.contains(&ip)));
            prop_assert_eq!(got, Ok(Some(*want)));
            used.insert(*want);
            last = Some(*want);
        }
        let full: Result<_, ()> = ipam::allocate_after(&s, last, |ip| Ok(used.contains(&ip)));
        prop_assert_eq!(full, Ok(None));
        if order.is_empty() {
            return Ok(());
        }
        let freed = order[pick.index(order.len())];
        used.remove(&freed);
        let again: Result<_, ()> = ipam::allocate_after(&s, last, |ip| Ok(used.contains(&ip)));
        prop_assert_eq!(again, Ok(Some(freed)));
    }

    /// Requests are accepted exactly when the address is in the subnet
    /// (anywhere, not only the range), not reserved and not in use; the
    /// refusal names the address.
    #[test]
    fn requests_are_checked_exactly((s, used) in subnet_and_used(), k in 0u128..300) {
        let n = size(&s.subnet);
        let ip = nth(&s.subnet, k % (n + 2)); // may lie past the subnet
        let ok = s.subnet.contains(&ip) && !reserved(&s, ip) && !used.contains(&ip);
        match ipam::check_address(&s, ip, used.contains(&ip)) {
            Ok(()) => prop_assert!(ok, "{} accepted in {}", ip, s.subnet),
            Err(why) => {
                prop_assert!(!ok, "{} refused in {}: {}", ip, s.subnet, why);
                prop_assert!(why.contains(&ip.to_string()), "{}", why);
            }
        }
    }

    /// Subnets parse back from their text; host bits are refused with the
    /// network suggested.
    #[test]
    fn subnets_parse_and_host_bits_are_refused(s in subnet(), k in 1u128..256) {
        prop_assert_eq!(ipam::parse_subnet(&s.subnet.to_string()), Ok(s.subnet));
        let n = size(&s.subnet);
        let with_host = IpNet::new(nth(&s.subnet, k % n), s.subnet.prefix_len()).unwrap();
        if k % n != 0 {
            let err = ipam::parse_subnet(&with_host.to_string()).unwrap_err();
            prop_assert!(err.contains("host bits") && err.contains(&s.subnet.to_string()), "{}", err);
        }
    }
}

/// A /64 is too big to exhaust, but allocation stays bounded and correct.
#[test]
fn allocation_in_a_large_ipv6_subnet_is_bounded() {
    let net: IpNet = "fd00:1::/64".parse().unwrap();
    let s = Subnet {
        subnet: net,
        gateway: ipam::first_host(&net),
        ip_range: None,
        range_start: None,
        range_end: None,
    };
    let mut used = BTreeSet::new();
    for i in 2..1002u128 {
        let ip = lowest_free(&s, &used).unwrap();
        assert_eq!(ip, nth(&net, i));
        used.insert(ip);
    }
}
