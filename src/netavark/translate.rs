//! From Podman's JSON to engine requests and back: pure functions, tested
//! without root.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use rete::engine::{AttachRequest, NetworkRequest, SubnetRequest};
use rete::model::{self, Endpoint, Protocol};
use rete::portspec::{PortRange, PortSpec};

use super::wire::{Address, Interface, Network, PortMapping, SetupRequest, StatusBlock};
use super::Failure;

/// The label that marks networks and attachments made through this frontend.
pub const FRONTEND: (&str, &str) = ("io.rete.frontend", "podman");

/// The search domain Podman's containers resolve each other's names in.
pub const SEARCH_DOMAIN: &str = "dns.podman";

/// The bridge options of a network that rete honours.
#[derive(Debug, Default, PartialEq)]
pub struct BridgeOptions {
    pub isolate: bool,
    pub mtu: Option<u32>,
}

/// Reads a network's `options`. Options rete cannot honour are refused,
/// naming the option; options it does not know are ignored, as netavark does.
pub fn bridge_options(n: &Network) -> Result<BridgeOptions, Failure> {
    let mut out = BridgeOptions::default();
    let bad = |k: &str, v: &str, why: &str| {
        Failure(format!("network \"{}\": option {k}={v}: {why}", n.name))
    };
    let number = |k: &str, v: &str| -> Result<Option<u32>, Failure> {
        match v.parse::<u32>() {
            Ok(0) => Ok(None),
            Ok(x) => Ok(Some(x)),
            Err(_) => Err(bad(k, v, "not a number")),
        }
    };
    for (k, v) in &n.options {
        match k.as_str() {
            // "strict" (netavark 1.8) cuts the network off from every other
            // one; rete's isolation always does, so "true" means that too.
            "isolate" => {
                out.isolate = match v.as_str() {
                    "true" | "strict" => true,
                    "false" | "" => false,
                    _ => return Err(bad(k, v, "use true, strict or false")),
                }
            }
            "mtu" | "com.docker.network.driver.mtu" => out.mtu = number(k, v)?,
            "mode" if v == "managed" || v.is_empty() => {}
            "mode" => return Err(bad(
                k,
                v,
                "rete manages the bridges of its networks itself; only mode=managed is supported",
            )),
            "vlan" | "vrf" => return Err(bad(k, v, "not supported by rete yet")),
            _ => {}
        }
    }
    Ok(out)
}

/// Reads a macvlan network's `options`: `mode` (the macvlan mode) and
/// `mtu`. Options rete cannot honour are refused; others are ignored.
fn macvlan_options(n: &Network) -> Result<(BTreeMap<String, String>, Option<u32>), Failure> {
    let mut options = BTreeMap::new();
    let mut mtu = None;
    if let Some(parent) = n.network_interface.as_ref().filter(|p| !p.is_empty()) {
        options.insert("parent".to_string(), parent.clone());
    }
    for (k, v) in &n.options {
        let bad = |why: &str| Failure(format!("network \"{}\": option {k}={v}: {why}", n.name));
        match k.as_str() {
            "mode" if !v.is_empty() => {
                v.parse::<model::MacvlanMode>().map_err(|e| bad(&e))?;
                options.insert("mode".to_string(), v.clone());
            }
            "mtu" => match v.parse::<u32>() {
                Ok(0) => {}
                Ok(x) => mtu = Some(x),
                Err(_) => return Err(bad("not a number")),
            },
            _ => {}
        }
    }
    Ok((options, mtu))
}

/// The rete network Podman's configuration describes.
pub fn network_request(n: &Network) -> Result<NetworkRequest, Failure> {
    let driver = match n.driver.as_str() {
        "bridge" => model::Driver::Bridge,
        "macvlan" => model::Driver::Macvlan,
        other => {
            return Err(Failure(format!(
                "network \"{}\" uses the {other} driver; rete supports bridge and macvlan networks",
                n.name
            )))
        }
    };
    match n.ipam_options.get("driver").map(String::as_str) {
        None | Some("") | Some("host-local") => {}
        Some(other) => {
            return Err(Failure(format!(
                "network \"{}\" uses the {other} IPAM driver; rete attaches only networks with subnets (host-local)",
                n.name
            )))
        }
    }
    if n.subnets.is_empty() {
        return Err(Failure(format!(
            "network \"{}\" has no subnets; rete needs at least one",
            n.name
        )));
    }
    let (no_default_route, metric) = rete::engine::route_options(&n.options)
        .map_err(|e| Failure(format!("network \"{}\": {e}", n.name)))?;
    let routes = n
        .routes
        .iter()
        .map(|r| model::StaticRoute {
            destination: r.destination.trunc(),
            gateway: r.gateway,
            metric: r.metric,
        })
        .collect();
    let subnets = n
        .subnets
        .iter()
        .map(|s| {
            let range = s.lease_range.as_ref();
            SubnetRequest {
                subnet: s.subnet,
                gateway: s.gateway,
                ip_range: None,
                range_start: range.and_then(|r| r.start_ip),
                range_end: range.and_then(|r| r.end_ip),
            }
        })
        .collect();
    // The engine resolves no names on macvlan networks (their gateway is
    // a router outside), whatever Podman says.
    let disable_dns = !n.dns_enabled || driver == model::Driver::Macvlan;
    let (bridge, options, mtu) = match driver {
        model::Driver::Bridge => {
            let o = bridge_options(n)?;
            let isolate = BTreeMap::from([("isolate".to_string(), o.isolate.to_string())]);
            (n.network_interface.clone(), isolate, o.mtu)
        }
        model::Driver::Macvlan => {
            let (options, mtu) = macvlan_options(n)?;
            (None, options, mtu)
        }
    };
    Ok(NetworkRequest {
        name: n.name.clone(),
        driver,
        subnets,
        internal: n.internal,
        mtu,
        bridge,
        labels: BTreeMap::from([(FRONTEND.0.to_string(), FRONTEND.1.to_string())]),
        options,
        disable_dns,
        direct: Vec::new(),
        routes,
        no_default_route,
        metric,
    })
}

/// Whether an existing rete network is the one `want` describes (so a
/// network Podman removed and made again differently is noticed).
pub fn same_network(have: &model::Network, want: &NetworkRequest) -> bool {
    let subnets_match = have.subnets.len() == want.subnets.len()
        && want.subnets.iter().all(|w| {
            have.subnets.iter().any(|h| {
                h.subnet == w.subnet
                    && h.gateway
                        == w.gateway
                            .unwrap_or_else(|| rete::ipam::first_host(&w.subnet))
            })
        });
    let isolate = want.options.get("isolate").map(String::as_str) == Some("true");
    let device = want.bridge.as_ref().or(want.options.get("parent"));
    let mode: Option<model::MacvlanMode> = want.options.get("mode").and_then(|m| m.parse().ok());
    let mode_matches =
        want.driver == model::Driver::Bridge || mode.unwrap_or_default() == have.macvlan_mode();
    subnets_match
        && have.driver == want.driver
        && mode_matches
        && device.is_none_or(|b| b == &have.bridge)
        && have.internal == want.internal
        && have.isolate == isolate
        && have.dns != want.disable_dns
        && have.mtu == want.mtu
        && have.routes == want.routes
        && have.no_default_route == want.no_default_route
        // A network stored by a rete that ignored Podman's metric has
        // none: the same network, not one to make again.
        && (have.metric.is_none() || have.metric == want.metric)
}

/// One attachment per network of the request, in Podman's order. The
/// container's published ports go with the first bridge network: the engine
/// keeps them per container, aimed at its first bridged address of each
/// family. A container on macvlan networks alone publishes nothing, as with
/// netavark: it is reached at its own address.
pub fn attach_requests(req: &SetupRequest, netns: &Path) -> Result<Vec<AttachRequest>, Failure> {
    if req.networks.0.is_empty() {
        return Err(Failure("the request names no networks".into()));
    }
    let mut ports = port_specs(&req.port_mappings)?;
    let mut out = Vec::new();
    for (name, per) in &req.networks.0 {
        let net = network_info(req, name)?;
        if per.interface_name.is_empty() {
            return Err(Failure(format!(
                "network \"{name}\": interface_name is missing"
            )));
        }
        let mac = per
            .static_mac
            .as_deref()
            .filter(|m| !m.is_empty())
            .map(rete::names::parse_mac)
            .transpose()?;
        // Names only mean something on networks with name resolution; the
        // container's own name is one of them, as with aardvark-dns.
        let mut aliases = Vec::new();
        if net.dns_enabled {
            for a in std::iter::once(&req.container_name).chain(&per.aliases) {
                if !a.is_empty() && !aliases.contains(a) {
                    aliases.push(a.clone());
                }
            }
        }
        let mut labels = BTreeMap::from([(FRONTEND.0.to_string(), FRONTEND.1.to_string())]);
        if !req.container_name.is_empty() {
            labels.insert("io.podman.name".into(), req.container_name.clone());
        }
        out.push(AttachRequest {
            container: req.container_id.clone(),
            netns: netns.to_path_buf(),
            network: name.clone(),
            ifname: per.interface_name.clone(),
            ips: per.static_ips.clone(),
            mac,
            ports: if net.driver == "macvlan" {
                Vec::new()
            } else {
                std::mem::take(&mut ports)
            },
            aliases,
            bandwidth: None,
            labels,
        });
    }
    Ok(out)
}

/// The configuration of a network the request attaches to.
pub fn network_info<'a>(req: &'a SetupRequest, name: &str) -> Result<&'a Network, Failure> {
    req.network_info.get(name).ok_or_else(|| {
        Failure(format!(
            "network \"{name}\" is in \"networks\" but not in \"network_info\""
        ))
    })
}

/// Podman's port mappings as rete port specs: one per protocol.
pub fn port_specs(ports: &[PortMapping]) -> Result<Vec<PortSpec>, Failure> {
    let mut out = Vec::new();
    for p in ports {
        let bad = |why: String| {
            Failure(format!(
                "port mapping {}:{} (range {}, {}): {why}",
                p.host_port, p.container_port, p.range, p.protocol
            ))
        };
        let count = p.range.max(1);
        let span = |start: u16| -> Result<PortRange, Failure> {
            let end = u32::from(start) + u32::from(count) - 1;
            if start == 0 || end > 65535 {
                return Err(bad("ports must lie within 1-65535".into()));
            }
            Ok(PortRange {
                start,
                end: end as u16,
            })
        };
        let container_ports = span(p.container_port)?;
        let host_ports = match p.host_port {
            0 => None,
            h => Some(span(h)?),
        };
        let host_ip: Option<IpAddr> = match p.host_ip.as_str() {
            "" => None,
            ip => Some(
                ip.parse()
                    .map_err(|_| bad(format!("host_ip \"{ip}\" is not an IP address")))?,
            ),
        };
        let protocols: Vec<&str> = p
            .protocol
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let protocols = if protocols.is_empty() {
            vec!["tcp"]
        } else {
            protocols
        };
        for proto in protocols {
            let protocol: Protocol = proto.to_lowercase().parse().map_err(bad)?;
            out.push(PortSpec {
                host_ip,
                host_ports,
                container_ports,
                protocol,
            });
        }
    }
    Ok(out)
}

/// What Podman learns of one attachment: the interface with its addresses
/// and gateways, and where to resolve names.
pub fn status_block(net: &model::Network, ep: &Endpoint) -> StatusBlock {
    let gateway_of = |ip: IpAddr| {
        net.subnets
            .iter()
            .find(|s| s.subnet.contains(&ip))
            .map(|s| s.gateway)
    };
    let (servers, search) = if net.dns {
        (
            net.subnets.iter().map(|s| s.gateway).collect(),
            vec![SEARCH_DOMAIN.to_string()],
        )
    } else {
        (Vec::new(), Vec::new())
    };
    StatusBlock {
        dns_search_domains: search,
        dns_server_ips: servers,
        interfaces: BTreeMap::from([(
            ep.ifname.clone(),
            Interface {
                mac_address: ep.mac.clone(),
                subnets: ep
                    .addresses
                    .iter()
                    .map(|a| Address {
                        gateway: gateway_of(a.addr()),
                        ipnet: *a,
                    })
                    .collect(),
            },
        )]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(json: &str) -> Network {
        serde_json::from_str(json).unwrap()
    }

    fn setup(json: &str) -> SetupRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn podman_network_becomes_a_rete_network() {
        let n = network(
            r#"{"name":"net1","driver":"bridge","network_interface":"podman1",
                "subnets":[{"subnet":"10.99.0.0/24","gateway":"10.99.0.254",
                            "lease_range":{"start_ip":"10.99.0.129","end_ip":"10.99.0.255"}},
                           {"subnet":"fd00:1::/64","gateway":"fd00:1::1"}],
                "ipv6_enabled":true,"internal":true,"dns_enabled":true,
                "options":{"isolate":"true","mtu":"1400","metric":"200"},
                "ipam_options":{"driver":"host-local"}}"#,
        );
        let r = network_request(&n).unwrap();
        assert_eq!(r.name, "net1");
        assert_eq!(r.bridge.as_deref(), Some("podman1"));
        assert!(r.internal);
        assert!(!r.disable_dns);
        assert_eq!(r.mtu, Some(1400));
        assert_eq!(r.options["isolate"], "true");
        assert_eq!(r.subnets.len(), 2);
        assert_eq!(
            r.subnets[0].range_start,
            Some("10.99.0.129".parse().unwrap())
        );
        assert_eq!(r.subnets[0].range_end, Some("10.99.0.255".parse().unwrap()));
        assert_eq!(r.subnets[1].gateway, Some("fd00:1::1".parse().unwrap()));
        assert_eq!(r.metric, Some(200));
        assert!(!r.no_default_route);
    }

    #[test]
    fn static_routes_and_no_default_route_reach_the_engine() {
        let n = network(
            r#"{"name":"r","driver":"bridge","subnets":[{"subnet":"10.1.0.0/24","gateway":"10.1.0.1"}],
                "routes":[{"destination":"10.9.0.0/16","gateway":"10.1.0.5","metric":50},
                          {"destination":"10.8.0.0/16","gateway":"10.1.0.6"}],
                "options":{"no_default_route":"true"}}"#,
        );
        let r = network_request(&n).unwrap();
        assert!(r.no_default_route);
        assert_eq!(r.routes.len(), 2);
        assert_eq!(
            r.routes[0].to_string(),
            "10.9.0.0/16 via 10.1.0.5 metric 50"
        );
        assert_eq!(r.routes[1].to_string(), "10.8.0.0/16 via 10.1.0.6");
    }

    #[test]
    fn podman_macvlan_network_names_its_parent_and_mode() {
        let n = network(
            r#"{"name":"lan","driver":"macvlan","network_interface":"eth9",
                "subnets":[{"subnet":"192.168.7.0/24","gateway":"192.168.7.1"}],
                "options":{"mode":"private","mtu":"1400"},
                "ipam_options":{"driver":"host-local"}}"#,
        );
        let r = network_request(&n).unwrap();
        assert_eq!(r.driver, model::Driver::Macvlan);
        assert_eq!(r.bridge, None);
        assert_eq!(r.options["parent"], "eth9");
        assert_eq!(r.options["mode"], "private");
        assert!(!r.options.contains_key("isolate"));
        assert_eq!(r.mtu, Some(1400));
    }

    #[test]
    fn unsupported_networks_are_refused_by_name() {
        let err = |json: &str| network_request(&network(json)).unwrap_err().0;
        let sub = r#""subnets":[{"subnet":"10.1.0.0/24"}]"#;
        assert!(err(&format!(
            r#"{{"name":"m","driver":"macvlan",{sub},"options":{{"mode":"source"}}}}"#
        ))
        .contains("unknown macvlan mode \"source\""));
        assert!(err(&format!(r#"{{"name":"i","driver":"ipvlan",{sub}}}"#)).contains("ipvlan"));
        assert!(err(r#"{"name":"d","ipam_options":{"driver":"dhcp"}}"#).contains("dhcp IPAM"));
        assert!(err(r#"{"name":"e"}"#).contains("no subnets"));
        assert!(err(&format!(
            r#"{{"name":"r",{sub},"options":{{"metric":"low"}}}}"#
        ))
        .contains("metric=low: not a number"));
        assert!(err(&format!(
            r#"{{"name":"r",{sub},"options":{{"no_default_route":"maybe"}}}}"#
        ))
        .contains("no_default_route=maybe"));
        assert!(
            err(&format!(r#"{{"name":"v",{sub},"options":{{"vlan":"5"}}}}"#))
                .contains("option vlan=5")
        );
        assert!(err(&format!(
            r#"{{"name":"o",{sub},"options":{{"isolate":"maybe"}}}}"#
        ))
        .contains("isolate=maybe"));
        assert!(err(&format!(
            r#"{{"name":"u",{sub},"options":{{"mode":"unmanaged"}}}}"#
        ))
        .contains("mode=managed"));
        // Unknown options are ignored, as netavark does.
        assert!(network_request(&network(&format!(
            r#"{{"name":"x",{sub},"options":{{"some.future.option":"1"}}}}"#
        )))
        .is_ok());
    }

    #[test]
    fn ports_expand_ranges_and_protocols() {
        let ports: Vec<PortMapping> = serde_json::from_str(
            r#"[{"host_ip":"","container_port":80,"host_port":9000,"range":3,"protocol":"tcp,udp"},
                {"host_ip":"127.0.0.1","container_port":90,"host_port":0,"range":0,"protocol":""},
                {"host_ip":"::1","container_port":70,"host_port":7000,"range":1,"protocol":"sctp"}]"#,
        )
        .unwrap();
        let specs = port_specs(&ports).unwrap();
        assert_eq!(specs.len(), 4);
        assert_eq!(specs[0].protocol, Protocol::Tcp);
        assert_eq!(specs[1].protocol, Protocol::Udp);
        assert_eq!(
            specs[0].host_ports,
            Some(PortRange {
                start: 9000,
                end: 9002
            })
        );
        assert_eq!(specs[0].container_ports, PortRange { start: 80, end: 82 });
        assert_eq!(specs[2].host_ports, None);
        assert_eq!(specs[2].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(specs[2].protocol, Protocol::Tcp);
        assert_eq!(specs[3].host_ip, Some("::1".parse().unwrap()));

        let bad: Vec<PortMapping> = serde_json::from_str(
            r#"[{"container_port":65535,"host_port":8000,"range":2,"protocol":"tcp"}]"#,
        )
        .unwrap();
        assert!(port_specs(&bad).unwrap_err().0.contains("1-65535"));
        let bad: Vec<PortMapping> =
            serde_json::from_str(r#"[{"container_port":80,"host_port":80,"protocol":"icmp"}]"#)
                .unwrap();
        assert!(port_specs(&bad).unwrap_err().0.contains("icmp"));
    }

    #[test]
    fn ports_go_with_the_first_network_and_names_with_dns() {
        let r = setup(
            r#"{"container_id":"abc","container_name":"web",
                "port_mappings":[{"container_port":80,"host_port":8080,"range":1,"protocol":"tcp"}],
                "networks":{"a":{"interface_name":"eth0","static_ips":["10.1.0.2"],"aliases":["abc1"],
                                 "static_mac":"02:00:00:00:00:01"},
                            "b":{"interface_name":"eth1","static_ips":["10.2.0.2"],"aliases":["abc1"]}},
                "network_info":{"a":{"name":"a","dns_enabled":true,"subnets":[{"subnet":"10.1.0.0/24"}]},
                                "b":{"name":"b","dns_enabled":false,"subnets":[{"subnet":"10.2.0.0/24"}]}}}"#,
        );
        let reqs = attach_requests(&r, Path::new("/run/netns/x")).unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].container, "abc");
        assert_eq!(reqs[0].ports.len(), 1);
        assert!(reqs[1].ports.is_empty());
        assert_eq!(reqs[0].aliases, ["web", "abc1"]);
        assert!(reqs[1].aliases.is_empty());
        assert_eq!(reqs[0].mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(reqs[1].ifname, "eth1");
        assert_eq!(reqs[0].labels[FRONTEND.0], FRONTEND.1);

        let missing = setup(
            r#"{"container_id":"abc","networks":{"zz":{"interface_name":"eth0"}},"network_info":{}}"#,
        );
        assert!(attach_requests(&missing, Path::new("/x"))
            .unwrap_err()
            .0
            .contains("\"zz\" is in \"networks\" but not in \"network_info\""));
    }

    #[test]
    fn status_block_reports_dns_on_gateways() {
        let net = model::Network {
            driver: model::Driver::Bridge,
            name: "n".into(),
            id: "i".into(),
            bridge: "podman1".into(),
            subnets: vec![
                model::Subnet {
                    subnet: "10.1.0.0/24".parse().unwrap(),
                    gateway: "10.1.0.1".parse().unwrap(),
                    ip_range: None,
                    range_start: None,
                    range_end: None,
                },
                model::Subnet {
                    subnet: "fd00::/64".parse().unwrap(),
                    gateway: "fd00::1".parse().unwrap(),
                    ip_range: None,
                    range_start: None,
                    range_end: None,
                },
            ],
            internal: false,
            isolate: false,
            masquerade: true,
            dns: true,
            mtu: None,
            gso_max_size: None,
            direct: vec![],
            routes: vec![],
            no_default_route: false,
            metric: None,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            created: 0,
        };
        let ep = Endpoint {
            network: "n".into(),
            ifname: "eth0".into(),
            host_ifname: "rete-1".into(),
            mac: "02:42:0a:01:00:02".into(),
            addresses: vec![
                "10.1.0.2/24".parse().unwrap(),
                "fd00::2/64".parse().unwrap(),
            ],
            gateways: vec![],
            aliases: vec![],
            bandwidth: None,
        };
        let b = status_block(&net, &ep);
        assert_eq!(b.dns_search_domains, ["dns.podman"]);
        assert_eq!(
            b.dns_server_ips,
            vec![
                "10.1.0.1".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        let i = &b.interfaces["eth0"];
        assert_eq!(i.subnets[1].gateway, Some("fd00::1".parse().unwrap()));
        let no_dns = model::Network { dns: false, ..net };
        assert!(status_block(&no_dns, &ep).dns_server_ips.is_empty());
    }
}
