//! `create` (Podman 5 and later ask netavark to make a network's
//! configuration): validate the network Podman proposes, fill in what it
//! leaves out (ID, bridge name, subnets, gateways, creation time) and print
//! it back. Nothing is made in the kernel: that happens at the first setup.

use std::net::Ipv6Addr;

use ipnet::{IpNet, Ipv6Net};

use super::translate::network_request;
use super::wire::{CreateRequest, Network, Subnet, SubnetPool};
use super::Failure;

/// Podman's default pool for networks made without a subnet.
const DEFAULT_POOL: &str = "10.89.0.0/16";

pub fn create(req: CreateRequest) -> Result<Network, Failure> {
    let CreateRequest {
        mut network,
        used,
        options,
    } = req;
    let n = &mut network;
    rete::names::check_name("network", &n.name)?;
    if let Some(id) = used.names.get(&n.name) {
        return Err(Failure(format!(
            "network name \"{}\" is already used by network {id}",
            n.name
        )));
    }
    if n.id.is_empty() {
        n.id = random_id();
    } else if n.id.len() != 64 || !n.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Failure(format!(
            "network ID \"{}\" is not 64 hexadecimal digits",
            n.id
        )));
    } else if used.names.values().any(|id| id == &n.id) {
        return Err(Failure(format!("network ID {} is already used", n.id)));
    }

    // Docker's names for two options, as Podman accepts them.
    if let Some(v) = n.options.remove("com.docker.network.driver.mtu") {
        n.options.insert("mtu".into(), v);
    }
    if let Some(v) = n.options.remove("com.docker.network.bridge.name") {
        n.network_interface = Some(v);
    }

    let macvlan = n.driver == "macvlan";
    if macvlan {
        // The parent: the host's device, named or (at setup) the one of the
        // default route. Its subnet is the link's, which only the user
        // knows: rete does not run DHCP for macvlan networks.
        if let Some(p) = &n.network_interface {
            rete::names::check_ifname(p)?;
        }
        if n.subnets.is_empty() {
            return Err(Failure(format!(
                "macvlan network \"{}\" needs a subnet (the one of its parent's link): rete does not lease macvlan addresses by DHCP",
                n.name
            )));
        }
        n.dns_enabled = false;
    }
    match &n.network_interface {
        _ if macvlan => {}
        Some(b) => {
            rete::names::check_ifname(b)?;
            if used.interfaces.contains(b) {
                return Err(Failure(format!("bridge name {b} is already in use")));
            }
        }
        None => {
            let prefix = match options.default_interface_name.as_str() {
                "" => "podman",
                p => p,
            };
            let name = (1..100_000)
                .map(|i| format!("{prefix}{i}"))
                .find(|b| !used.interfaces.contains(b))
                .ok_or_else(|| Failure(format!("no free bridge name {prefix}N left")))?;
            n.network_interface = Some(name);
        }
    }

    if n.subnets.is_empty() && ipam_driver(n) == "host-local" {
        let taken = taken(&used.subnets, &[], options.check_used_subnets);
        n.subnets.push(free_ipv4(&options.subnet_pools, &taken)?);
    }
    let has = |n: &Network, v6: bool| n.subnets.iter().any(|s| s.subnet.addr().is_ipv6() == v6);
    if n.ipv6_enabled && !has(n, true) {
        n.subnets.push(subnet(IpNet::V6(random_ula())));
    }
    if n.ipv6_enabled && !has(n, false) {
        let taken = taken(&used.subnets, &n.subnets, options.check_used_subnets);
        n.subnets.push(free_ipv4(&options.subnet_pools, &taken)?);
    }
    n.ipv6_enabled = has(n, true);

    let add_gateway = !n.internal || n.dns_enabled;
    for s in &mut n.subnets {
        s.subnet = s.subnet.trunc();
        if add_gateway && s.gateway.is_none() {
            s.gateway = Some(rete::ipam::first_host(&s.subnet));
        }
        check_subnet(s)?;
        if options.check_used_subnets {
            if let Some(u) = used
                .subnets
                .iter()
                .find(|u| rete::ipam::overlaps(u, &s.subnet))
            {
                return Err(Failure(format!(
                    "subnet {} overlaps {u}, which is already used on the host or by another network",
                    s.subnet
                )));
            }
        }
    }
    for (i, a) in n.subnets.iter().enumerate() {
        if let Some(b) = n.subnets[i + 1..]
            .iter()
            .find(|b| rete::ipam::overlaps(&a.subnet, &b.subnet))
        {
            return Err(Failure(format!(
                "subnets {} and {} overlap",
                a.subnet, b.subnet
            )));
        }
    }
    if !n.network_dns_servers.is_empty() && !n.dns_enabled {
        return Err(Failure(
            "network_dns_servers needs dns_enabled: the servers are for the network's resolver"
                .into(),
        ));
    }
    // What setup will refuse is refused now: the driver, the IPAM driver,
    // options and routes.
    let req = network_request(n)?;
    let subnets: Vec<IpNet> = n.subnets.iter().map(|s| s.subnet).collect();
    rete::engine::check_routes(&req, &subnets)
        .map_err(|e| Failure(format!("network \"{}\": {e}", n.name)))?;
    n.ipam_options.insert("driver".into(), "host-local".into());
    n.rest
        .entry("created")
        .or_insert_with(|| rfc3339(now()).into());
    Ok(network)
}

fn ipam_driver(n: &Network) -> &str {
    match n.ipam_options.get("driver").map(String::as_str) {
        None | Some("") => "host-local",
        Some(d) => d,
    }
}

fn subnet(net: IpNet) -> Subnet {
    Subnet {
        subnet: net,
        gateway: None,
        lease_range: None,
    }
}

fn check_subnet(s: &Subnet) -> Result<(), Failure> {
    let model = rete::model::Subnet {
        subnet: s.subnet,
        gateway: s
            .gateway
            .unwrap_or_else(|| rete::ipam::first_host(&s.subnet)),
        ip_range: None,
        range_start: s.lease_range.as_ref().and_then(|r| r.start_ip),
        range_end: s.lease_range.as_ref().and_then(|r| r.end_ip),
    };
    rete::ipam::check_subnet(&model).map_err(Failure)
}

fn taken(used: &[IpNet], own: &[Subnet], check_used: bool) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = own.iter().map(|s| s.subnet).collect();
    if check_used {
        out.extend(used);
    }
    out
}

/// The first subnet of the pools (Podman's default pool without any) that
/// overlaps nothing taken.
fn free_ipv4(pools: &[SubnetPool], taken: &[IpNet]) -> Result<Subnet, Failure> {
    let default = [SubnetPool {
        base: DEFAULT_POOL.parse().expect("a valid pool"),
        size: 24,
    }];
    let pools = if pools.is_empty() {
        &default[..]
    } else {
        pools
    };
    for p in pools {
        let Ok(candidates) = p.base.subnets(p.size) else {
            continue;
        };
        if let Some(free) = candidates
            .take(1 << 16)
            .find(|c| !taken.iter().any(|t| rete::ipam::overlaps(t, c)))
        {
            return Ok(subnet(free));
        }
    }
    Err(Failure(
        "no free subnet left in the subnet pools; pass --subnet".into(),
    ))
}

/// A unique local /64 (RFC 4193: fd00::/8 and a random 40-bit global ID).
fn random_ula() -> Ipv6Net {
    let mut o = [0u8; 16];
    o[0] = 0xfd;
    let global: [u8; 5] = rete::random::bytes();
    o[1..6].copy_from_slice(&global);
    Ipv6Net::new(Ipv6Addr::from(o), 64).expect("64 is a valid prefix")
}

fn random_id() -> String {
    let bytes: [u8; 32] = rete::random::bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the epoch as RFC 3339 in UTC, the form Go's time.Time reads.
fn rfc3339(secs: u64) -> String {
    // Days to a civil date: Howard Hinnant's algorithm, in the proleptic
    // Gregorian calendar with eras of 400 years.
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn gateways(n: &Network) -> Vec<Option<IpAddr>> {
        n.subnets.iter().map(|s| s.gateway).collect()
    }

    fn create_json(json: &str) -> Result<Network, String> {
        create(serde_json::from_str(json).unwrap()).map_err(|f| f.0)
    }

    #[test]
    fn completes_a_bare_network() {
        let n = create_json(
            r#"{"network":{"name":"web","driver":"bridge","dns_enabled":true,"labels":{"a":"b"}},
                "used":{"interfaces":["podman0","podman1"],"names":{"podman":"x"},"subnets":["10.89.0.0/24"]},
                "options":{"subnet_pools":[{"base":"10.89.0.0/16","size":24}],
                           "default_interface_name":"podman","check_used_subnets":true}}"#,
        )
        .unwrap();
        assert_eq!(n.id.len(), 64);
        assert_eq!(n.network_interface.as_deref(), Some("podman2"));
        assert_eq!(n.subnets[0].subnet.to_string(), "10.89.1.0/24");
        assert_eq!(gateways(&n), [Some("10.89.1.1".parse().unwrap())]);
        assert_eq!(n.ipam_options["driver"], "host-local");
        assert!(n.rest["created"].as_str().unwrap().ends_with('Z'));
        // Fields rete does not read come back as they were.
        assert_eq!(n.rest["labels"]["a"], "b");
        let printed = serde_json::to_value(&n).unwrap();
        assert_eq!(printed["labels"]["a"], "b");
        assert_eq!(printed["subnets"][0]["gateway"], "10.89.1.1");
    }

    #[test]
    fn ipv6_and_internal() {
        let n = create_json(
            r#"{"network":{"name":"v6","driver":"bridge","ipv6_enabled":true,"internal":true,
                           "subnets":[{"subnet":"10.7.0.5/24"}],"options":{"com.docker.network.driver.mtu":"1400"}}}"#,
        )
        .unwrap();
        assert_eq!(n.subnets.len(), 2);
        assert_eq!(n.subnets[0].subnet.to_string(), "10.7.0.0/24");
        let v6 = n.subnets[1].subnet;
        assert!(v6.addr().is_ipv6() && v6.prefix_len() == 64);
        assert!(v6.to_string().starts_with("fd"));
        // Internal without DNS: no gateway, as netavark.
        assert_eq!(gateways(&n), [None, None]);
        assert_eq!(n.options["mtu"], "1400");
    }

    #[test]
    fn refusals_name_the_problem() {
        let err = |net: &str, used: &str| {
            create_json(&format!(
                r#"{{"network":{net},"used":{used},"options":{{"check_used_subnets":true}}}}"#
            ))
            .unwrap_err()
        };
        let none = "{}";
        assert!(err(r#"{"name":"a b"}"#, none).contains("invalid network name"));
        assert!(err(r#"{"name":"p"}"#, r#"{"names":{"p":"1"}}"#).contains("already used"));
        assert!(err(
            r#"{"name":"p","network_interface":"podman0"}"#,
            r#"{"interfaces":["podman0"]}"#
        )
        .contains("bridge name podman0"));
        assert!(err(
            r#"{"name":"p","subnets":[{"subnet":"10.88.0.0/16"}]}"#,
            r#"{"subnets":["10.88.1.0/24"]}"#
        )
        .contains("overlaps 10.88.1.0/24"));
        assert!(err(
            r#"{"name":"p","subnets":[{"subnet":"10.1.0.0/24","gateway":"10.2.0.1"}]}"#,
            none
        )
        .contains("gateway 10.2.0.1"));
        assert!(err(
            r#"{"name":"p","subnets":[{"subnet":"10.1.0.0/16"},{"subnet":"10.1.2.0/24"}]}"#,
            none
        )
        .contains("overlap"));
        assert!(err(r#"{"name":"p","driver":"macvlan"}"#, none).contains("needs a subnet"));
        assert!(err(r#"{"name":"p","driver":"ipvlan"}"#, none).contains("ipvlan driver"));
        assert!(
            err(r#"{"name":"p","network_dns_servers":["1.1.1.1"]}"#, none).contains("dns_enabled")
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_463_564), "2026-11-23T19:52:44Z");
    }
}
