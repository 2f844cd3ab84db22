//! Podman's JSON for netavark, as Podman 4.3 writes it and netavark 1.4
//! reads and prints it: the setup/teardown request, the network
//! configuration, the status block printed per network, and the `create`
//! request of newer Podman. Kept apart from the engine's model; `translate.rs`
//! turns these into engine requests. Unknown fields are ignored, and `null`
//! stands for an empty list or map (Go writes nil slices so).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What `setup` and `teardown` read: one container and its networks.
#[derive(Debug, Deserialize)]
pub struct SetupRequest {
    pub container_id: String,
    #[serde(default)]
    pub container_name: String,
    /// Per-network options, in the order Podman listed them.
    pub networks: Networks,
    /// The configuration of every network in `networks`, by name.
    #[serde(deserialize_with = "lenient")]
    pub network_info: BTreeMap<String, Network>,
    #[serde(default, deserialize_with = "lenient")]
    pub port_mappings: Vec<PortMapping>,
}

/// `networks`: a map from network name to options (Podman), or a list of
/// options that carry the name (netavark's other accepted form).
#[derive(Debug, Default)]
pub struct Networks(pub Vec<(String, PerNetwork)>);

/// How one container joins one network.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PerNetwork {
    pub interface_name: String,
    #[serde(default, deserialize_with = "lenient")]
    pub static_ips: Vec<IpAddr>,
    #[serde(default)]
    pub static_mac: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub aliases: Vec<String>,
}

/// One network's configuration, as Podman keeps it in
/// `network_config_dir/NAME.json`. Fields rete does not read (`created`,
/// `labels`, ...) are kept in `rest` so `create` prints them back.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Network {
    pub name: String,
    #[serde(default)]
    pub id: String,
    #[serde(default = "bridge")]
    pub driver: String,
    /// The bridge device (for macvlan: the parent device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub subnets: Vec<Subnet>,
    #[serde(default)]
    pub ipv6_enabled: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub dns_enabled: bool,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub options: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub ipam_options: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub routes: Vec<Route>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub network_dns_servers: Vec<IpAddr>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

fn bridge() -> String {
    "bridge".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Subnet {
    pub subnet: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_range: Option<LeaseRange>,
}

/// The part of a subnet Podman's IPAM hands addresses out from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LeaseRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ip: Option<IpAddr>,
}

/// A static route of a network (netavark 1.5 and later).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Route {
    pub destination: IpNet,
    pub gateway: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

/// One `-p`: `range` consecutive ports from `host_port` to `container_port`,
/// for each of the comma-separated protocols.
#[derive(Debug, Clone, Deserialize)]
pub struct PortMapping {
    /// Empty: every host address.
    #[serde(default)]
    pub host_ip: String,
    pub container_port: u16,
    /// 0: any free port.
    #[serde(default)]
    pub host_port: u16,
    /// 0 and 1 both mean a single port.
    #[serde(default)]
    pub range: u16,
    /// "tcp", "udp", "sctp" or several, comma-separated; empty means tcp.
    #[serde(default)]
    pub protocol: String,
}

/// What `setup` prints for one network.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusBlock {
    pub dns_search_domains: Vec<String>,
    pub dns_server_ips: Vec<IpAddr>,
    /// By interface name inside the container.
    pub interfaces: BTreeMap<String, Interface>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interface {
    pub mac_address: String,
    pub subnets: Vec<Address>,
}

/// An address with its prefix, and the gateway of its subnet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Address {
    pub gateway: Option<IpAddr>,
    pub ipnet: IpNet,
}

/// What `create` reads (Podman 5 and later): a network to validate and
/// complete, with what is already taken.
#[derive(Debug, Deserialize)]
pub struct CreateRequest {
    pub network: Network,
    #[serde(default)]
    pub used: Used,
    #[serde(default)]
    pub options: CreateOptions,
}

#[derive(Debug, Default, Deserialize)]
pub struct Used {
    #[serde(default, deserialize_with = "lenient")]
    pub interfaces: Vec<String>,
    /// Network name to ID.
    #[serde(default, deserialize_with = "lenient")]
    pub names: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "lenient")]
    pub subnets: Vec<IpNet>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CreateOptions {
    #[serde(default, deserialize_with = "lenient")]
    pub subnet_pools: Vec<SubnetPool>,
    #[serde(default)]
    pub default_interface_name: String,
    #[serde(default)]
    pub check_used_subnets: bool,
}

/// Subnets of prefix length `size` are cut from `base`.
#[derive(Debug, Clone, Deserialize)]
pub struct SubnetPool {
    pub base: IpNet,
    pub size: u8,
}

/// What `version` prints, in netavark's shape.
#[derive(Debug, Serialize)]
pub struct Version {
    pub version: &'static str,
    pub commit: &'static str,
    pub build_time: &'static str,
    pub target: String,
}

/// The error document printed on stdout with exit status 1.
#[derive(Debug, Serialize)]
pub struct ErrorReply<'a> {
    pub error: &'a str,
}

/// Reads `null` as the type's default.
fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl<'de> Deserialize<'de> for Networks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NetworksVisitor)
    }
}

/// A list entry of `networks`: the options with the network's name.
#[derive(Deserialize)]
struct NamedPerNetwork {
    name: String,
    #[serde(flatten)]
    options: PerNetwork,
}

struct NetworksVisitor;

impl<'de> Visitor<'de> for NetworksVisitor {
    type Value = Networks;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map from network name to options, or a list of options with names")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Networks, A::Error> {
        let mut out = Vec::new();
        while let Some((name, options)) = map.next_entry::<String, PerNetwork>()? {
            out.push((name, options));
        }
        Ok(Networks(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Networks, A::Error> {
        let mut out = Vec::new();
        while let Some(n) = seq.next_element::<NamedPerNetwork>()? {
            out.push((n.name, n.options));
        }
        Ok(Networks(out))
    }

    fn visit_unit<E>(self) -> Result<Networks, E> {
        Ok(Networks::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Podman 4.3 sent for `podman run -p 8080:80 -p 127.0.0.1::90/udp`
    /// on its default network (recorded from a real run).
    const PODMAN_DEFAULT: &str = r#"{"container_id":"46666c0c13c7637afc8e5fe122b53b291f5ff35f8b1d1d705896ba94099d0109","container_name":"busy_villani","port_mappings":[{"host_ip":"","container_port":80,"host_port":8080,"range":1,"protocol":"tcp"},{"host_ip":"127.0.0.1","container_port":90,"host_port":42611,"range":1,"protocol":"udp"}],"networks":{"podman":{"static_ips":["10.88.0.2"],"aliases":["46666c0c13c7"],"interface_name":"eth0"}},"network_info":{"podman":{"name":"podman","id":"2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9","driver":"bridge","network_interface":"podman0","created":"2026-11-23T19:52:44.070794426Z","subnets":[{"subnet":"10.88.0.0/16","gateway":"10.88.0.1"}],"ipv6_enabled":false,"internal":false,"dns_enabled":false,"ipam_options":{"driver":"host-local"}}}}"#;

    #[test]
    fn reads_podman_setup() {
        let r: SetupRequest = serde_json::from_str(PODMAN_DEFAULT).unwrap();
        assert_eq!(r.container_name, "busy_villani");
        assert_eq!(r.networks.0.len(), 1);
        let (name, per) = &r.networks.0[0];
        assert_eq!(name, "podman");
        assert_eq!(per.interface_name, "eth0");
        assert_eq!(per.static_ips, vec!["10.88.0.2".parse::<IpAddr>().unwrap()]);
        let n = &r.network_info["podman"];
        assert_eq!(n.network_interface.as_deref(), Some("podman0"));
        assert_eq!(n.subnets[0].gateway, Some("10.88.0.1".parse().unwrap()));
        assert_eq!(n.ipam_options["driver"], "host-local");
        assert_eq!(r.port_mappings[1].host_ip, "127.0.0.1");
        assert_eq!(r.port_mappings[1].protocol, "udp");
    }

    #[test]
    fn networks_as_list_keep_their_order() {
        let r: SetupRequest = serde_json::from_str(
            r#"{"container_id":"c","networks":[
                {"name":"b","interface_name":"eth0","static_ips":["10.0.0.2"]},
                {"name":"a","interface_name":"eth1","unknown":1}],
               "network_info":{}}"#,
        )
        .unwrap();
        let names: Vec<&str> = r.networks.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(r.networks.0[1].1.interface_name, "eth1");
    }

    #[test]
    fn nulls_and_unknown_fields_are_accepted() {
        let r: SetupRequest = serde_json::from_str(
            r#"{"container_id":"c","networks":{"n":{"interface_name":"eth0","static_ips":null,"aliases":null}},
               "network_info":{"n":{"name":"n","subnets":null,"options":null,"labels":{"a":"b"},"future":true}},
               "port_mappings":null,"dns_servers":["1.1.1.1"],"something_new":{}}"#,
        )
        .unwrap();
        let n = &r.network_info["n"];
        assert_eq!(n.driver, "bridge");
        assert!(n.subnets.is_empty());
        assert_eq!(n.rest["labels"]["a"], "b");
        assert!(r.port_mappings.is_empty());
    }

    #[test]
    fn lease_range_and_status_block_shapes() {
        let s: Subnet = serde_json::from_str(
            r#"{"subnet":"10.99.0.0/24","gateway":"10.99.0.254","lease_range":{"start_ip":"10.99.0.129","end_ip":"10.99.0.255"}}"#,
        )
        .unwrap();
        assert_eq!(
            s.lease_range.unwrap().start_ip,
            Some("10.99.0.129".parse().unwrap())
        );
        let block = StatusBlock {
            dns_search_domains: vec![],
            dns_server_ips: vec![],
            interfaces: BTreeMap::from([(
                "eth0".to_string(),
                Interface {
                    mac_address: "2a:07:c4:ed:3c:aa".into(),
                    subnets: vec![Address {
                        gateway: Some("10.88.0.1".parse().unwrap()),
                        ipnet: "10.88.0.2/16".parse().unwrap(),
                    }],
                },
            )]),
        };
        // Byte for byte what netavark 1.4 printed for the same attachment.
        assert_eq!(
            serde_json::to_string(&BTreeMap::from([("podman", block)])).unwrap(),
            r#"{"podman":{"dns_search_domains":[],"dns_server_ips":[],"interfaces":{"eth0":{"mac_address":"2a:07:c4:ed:3c:aa","subnets":[{"gateway":"10.88.0.1","ipnet":"10.88.0.2/16"}]}}}}"#
        );
    }
}
