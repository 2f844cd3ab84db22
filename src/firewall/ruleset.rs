//! The rendered nftables ruleset: the fixed table, and set/map elements as
//! data. Pure functions, so the rendering is tested without root.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::Protocol;

/// The fixed part of the table. Everything per network or per container is an
/// element of one of its sets or maps.
///
/// - `bridges`: every rete bridge; `isolated`: bridges that may not exchange
///   routed traffic with other rete bridges; `internal`: bridges with no routed
///   traffic in or out at all.
/// - `intra`: each bridge paired with itself. With br_netfilter loaded, frames
///   switched inside one bridge traverse the inet forward hook with the
///   bridge as both input and output device; they are accepted before the
///   isolation rules, which would otherwise drop them.
/// - `masq4`/`masq6`: subnets whose traffic leaving through a non-rete device
///   is masqueraded; `subnets4`/`subnets6`: every rete subnet, for hairpin NAT;
///   `direct4`/`direct6`: destinations reached without masquerade (a
///   cluster's container range).
/// - `pub4`/`pub6`: published ports on one host address, keyed by
///   address . protocol . port; `pub4any`/`pub6any`: on every local address.
pub const TABLE: &str = r#"table inet rete {
	set bridges { type ifname; }
	set isolated { type ifname; }
	set internal { type ifname; }
	set intra { type ifname . ifname; }
	set masq4 { type ipv4_addr; flags interval; }
	set masq6 { type ipv6_addr; flags interval; }
	set subnets4 { type ipv4_addr; flags interval; }
	set subnets6 { type ipv6_addr; flags interval; }
	set direct4 { type ipv4_addr; flags interval; }
	set direct6 { type ipv6_addr; flags interval; }
	map pub4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
	map pub4any { type inet_proto . inet_service : ipv4_addr . inet_service; }
	map pub6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; }
	map pub6any { type inet_proto . inet_service : ipv6_addr . inet_service; }
	chain publish {
		dnat ip to ip daddr . meta l4proto . th dport map @pub4
		dnat ip to meta l4proto . th dport map @pub4any
		dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub6
		dnat ip6 to meta l4proto . th dport map @pub6any
	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local jump publish
	}
	chain output {
		type nat hook output priority -100; policy accept;
		fib daddr type local jump publish
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ct status dnat ip saddr 127.0.0.0/8 masquerade
		ct status dnat oifname @bridges ip saddr @subnets4 masquerade
		ct status dnat oifname @bridges ip6 saddr @subnets6 masquerade
		oifname != @bridges ip saddr @masq4 ip daddr != @direct4 masquerade
		oifname != @bridges ip6 saddr @masq6 ip6 daddr != @direct6 masquerade
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname . oifname @intra accept
		iifname @internal drop
		oifname @internal drop
		ct status dnat accept
		iifname @isolated oifname @bridges drop
		iifname @bridges oifname @isolated drop
	}
}
"#;

/// A cheap command that fails when the table is missing or older than
/// [`TABLE`]: it names the object added last to the layout (update it when
/// the layout grows).
pub const PROBE: &str = "list set inet rete direct4";

const SETS: [&str; 14] = [
    "bridges", "isolated", "internal", "intra", "masq4", "masq6", "subnets4", "subnets6",
    "direct4", "direct6", "pub4", "pub4any", "pub6", "pub6any",
];

/// One element of one of the table's sets or maps.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Element {
    Bridge(String),
    Isolated(String),
    Internal(String),
    /// Traffic from a bridge to itself.
    Intra(String),
    Masquerade(IpNet),
    Subnet(IpNet),
    /// A destination reached without masquerade.
    Direct(IpNet),
    /// A published port: traffic to `host_ip` (unspecified = every local
    /// address of that family) `protocol` `host_port` goes to `target`.
    Publish {
        host_ip: IpAddr,
        protocol: Protocol,
        host_port: u16,
        target: IpAddr,
        target_port: u16,
    },
}

impl Element {
    /// The set or map the element belongs to.
    pub fn set(&self) -> &'static str {
        match self {
            Element::Bridge(_) => "bridges",
            Element::Isolated(_) => "isolated",
            Element::Internal(_) => "internal",
            Element::Intra(_) => "intra",
            Element::Masquerade(IpNet::V4(_)) => "masq4",
            Element::Masquerade(IpNet::V6(_)) => "masq6",
            Element::Subnet(IpNet::V4(_)) => "subnets4",
            Element::Subnet(IpNet::V6(_)) => "subnets6",
            Element::Direct(IpNet::V4(_)) => "direct4",
            Element::Direct(IpNet::V6(_)) => "direct6",
            Element::Publish { host_ip, .. } => match (host_ip, host_ip.is_unspecified()) {
                (IpAddr::V4(_), false) => "pub4",
                (IpAddr::V4(_), true) => "pub4any",
                (IpAddr::V6(_), false) => "pub6",
                (IpAddr::V6(_), true) => "pub6any",
            },
        }
    }

    fn value(&self) -> String {
        match self {
            Element::Bridge(n) | Element::Isolated(n) | Element::Internal(n) => format!("\"{n}\""),
            Element::Intra(n) => format!("\"{n}\" . \"{n}\""),
            Element::Masquerade(net) | Element::Subnet(net) | Element::Direct(net) => {
                net.to_string()
            }
            Element::Publish {
                host_ip,
                protocol,
                host_port,
                target,
                target_port,
            } => {
                let key = if host_ip.is_unspecified() {
                    format!("{protocol} . {host_port}")
                } else {
                    format!("{host_ip} . {protocol} . {host_port}")
                };
                format!("{key} : {target} . {target_port}")
            }
        }
    }
}

/// Renders `verb` ("add" or "delete") of `elements`, one command per set, in
/// the order the sets are declared.
pub fn render(verb: &str, elements: &[Element]) -> String {
    let mut out = String::new();
    for set in SETS {
        let values: Vec<String> = elements
            .iter()
            .filter(|e| e.set() == set)
            .map(Element::value)
            .collect();
        if !values.is_empty() {
            out.push_str(&format!(
                "{verb} element inet rete {set} {{ {} }}\n",
                values.join(", ")
            ));
        }
    }
    out
}

/// Commands that empty every set and map of the table.
pub fn flush_all() -> String {
    SETS.iter()
        .map(|s| {
            let kind = if s.starts_with("pub") { "map" } else { "set" };
            format!("flush {kind} inet rete {s}\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_command_per_set() {
        let elements = vec![
            Element::Bridge("rete0".into()),
            Element::Publish {
                host_ip: "0.0.0.0".parse().unwrap(),
                protocol: Protocol::Tcp,
                host_port: 8080,
                target: "10.140.0.2".parse().unwrap(),
                target_port: 80,
            },
            Element::Publish {
                host_ip: "192.0.2.1".parse().unwrap(),
                protocol: Protocol::Udp,
                host_port: 53,
                target: "10.140.0.2".parse().unwrap(),
                target_port: 5353,
            },
            Element::Publish {
                host_ip: "::".parse().unwrap(),
                protocol: Protocol::Sctp,
                host_port: 9,
                target: "fd00::2".parse().unwrap(),
                target_port: 9,
            },
            Element::Bridge("rete1".into()),
            Element::Masquerade("10.140.0.0/24".parse().unwrap()),
        ];
        assert_eq!(
            render("add", &elements),
            "add element inet rete bridges { \"rete0\", \"rete1\" }\n\
             add element inet rete masq4 { 10.140.0.0/24 }\n\
             add element inet rete pub4 { 192.0.2.1 . udp . 53 : 10.140.0.2 . 5353 }\n\
             add element inet rete pub4any { tcp . 8080 : 10.140.0.2 . 80 }\n\
             add element inet rete pub6any { sctp . 9 : fd00::2 . 9 }\n"
        );
    }

    #[test]
    fn flush_names_maps_and_sets() {
        let f = flush_all();
        assert!(f.contains("flush map inet rete pub6any\n"));
        assert!(f.contains("flush set inet rete bridges\n"));
        assert_eq!(f.lines().count(), SETS.len());
    }
}
