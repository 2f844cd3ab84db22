//! CNI's JSON, as the spec (1.1.0 and the versions before it) writes it:
//! network configuration in, results and errors out. Kept apart from the
//! engine's model; `plugin.rs` and `ipam.rs` translate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Versions whose results rete can write.
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A plugin's network configuration (one element of a conflist, with the
/// list's name and version filled in by the runtime).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub bridge: Option<String>,
    pub is_gateway: Option<bool>,
    pub ip_masq: Option<bool>,
    pub mtu: Option<u32>,
    /// rete: isolate this network from other rete networks (default true).
    pub isolate: Option<bool>,
    /// rete: no route out and no masquerade.
    pub internal: Option<bool>,
    /// rete: no name resolution by rete's resolver on this network.
    pub disable_dns: Option<bool>,
    /// rete: traffic between the network's containers skips the bridge
    /// (`rete::fastpath`). Off by default here: its tc filter on the host
    /// end clashes with plugins chained after rete that add their own
    /// ingress qdisc there (the reference `bandwidth`), and its shortcut
    /// would pass by their shaping.
    pub fastpath: Option<bool>,
    pub ipam: Option<IpamConf>,
    pub dns: Option<Dns>,
    /// Limits in the configuration itself, as the reference bandwidth
    /// plugin also takes them; the `bandwidth` capability overrides them.
    #[serde(flatten)]
    pub bandwidth: Bandwidth,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// rete: where its store and runtime files are (else RETE_STATE_DIR etc.).
    pub state_dir: Option<String>,
    pub run_dir: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub subnet: Option<String>,
    pub range_start: Option<String>,
    pub range_end: Option<String>,
    pub gateway: Option<String>,
    #[serde(default)]
    pub ranges: Vec<Vec<Range>>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

#[derive(Debug, Deserialize, Serialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Range {
    pub subnet: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
pub struct Route {
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, Default, Clone)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Capability arguments the runtime passes (CONVENTIONS.md).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub ips: Vec<String>,
    pub mac: Option<String>,
    pub bandwidth: Option<Bandwidth>,
    pub dns: Option<RuntimeDns>,
    #[serde(default)]
    pub ip_ranges: Vec<Vec<Range>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(rename = "hostIP", default)]
    pub host_ip: Option<String>,
}

fn tcp() -> String {
    "tcp".into()
}

/// Rates in bits per second, bursts in bits.
#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default)]
    pub ingress_rate: u64,
    #[serde(default)]
    pub ingress_burst: u64,
    #[serde(default)]
    pub egress_rate: u64,
    #[serde(default)]
    pub egress_burst: u64,
}

#[derive(Debug, Deserialize, Default)]
pub struct RuntimeDns {
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    pub searches: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Deserialize, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// A result, version-neutral until written.
#[derive(Debug, Default, Clone)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Option<Dns>,
}

#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub sandbox: Option<String>,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct IpConfig {
    /// CIDR form: address/prefix.
    pub address: String,
    pub gateway: Option<String>,
    pub interface: Option<usize>,
}

impl CniResult {
    /// The result as `version` writes it: 0.3.x and 0.4.0 tag each IP with
    /// its family; 1.1.0 adds interface MTUs.
    pub fn to_json(&self, version: &str) -> Value {
        let old = version.starts_with("0.");
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut v = json!({ "name": i.name });
                if let Some(m) = &i.mac {
                    v["mac"] = json!(m);
                }
                if let Some(s) = &i.sandbox {
                    v["sandbox"] = json!(s);
                }
                if let (Some(mtu), "1.1.0") = (i.mtu, version) {
                    v["mtu"] = json!(mtu);
                }
                v
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = json!({ "address": ip.address });
                if old {
                    v["version"] = json!(if ip.address.contains(':') { "6" } else { "4" });
                }
                if let Some(g) = &ip.gateway {
                    v["gateway"] = json!(g);
                }
                if let Some(i) = ip.interface {
                    v["interface"] = json!(i);
                }
                v
            })
            .collect();
        let mut out = json!({ "cniVersion": version, "interfaces": interfaces, "ips": ips });
        if !self.routes.is_empty() {
            out["routes"] = json!(self.routes);
        }
        out["dns"] = json!(self.dns.clone().unwrap_or_default());
        if interfaces_empty(&out) {
            out.as_object_mut().expect("object").remove("interfaces");
        }
        out
    }
}

fn interfaces_empty(v: &Value) -> bool {
    v["interfaces"].as_array().is_some_and(Vec::is_empty)
}

/// Appends `ours` to a previous plugin's result (a chain where rete is not
/// first): its interfaces, with our IPs' interface indexes shifted past them.
pub fn merge(prev: &Value, ours: Value, version: &str) -> Result<Value, String> {
    let Some(prev) = prev.as_object() else {
        return Err("prevResult is not a JSON object".into());
    };
    let list = |v: Option<&Value>, key: &str| -> Result<Vec<Value>, String> {
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(_) => Err(format!("prevResult.{key} is not a list")),
        }
    };
    let mut interfaces = list(prev.get("interfaces"), "interfaces")?;
    let mut ips = list(prev.get("ips"), "ips")?;
    let mut routes = list(prev.get("routes"), "routes")?;
    let shift = interfaces.len();
    interfaces.extend(list(ours.get("interfaces"), "interfaces")?);
    for mut ip in list(ours.get("ips"), "ips")? {
        if let Some(i) = ip["interface"].as_u64() {
            ip["interface"] = json!(i as usize + shift);
        }
        ips.push(ip);
    }
    routes.extend(list(ours.get("routes"), "routes")?);
    let mut out =
        json!({ "cniVersion": version, "interfaces": interfaces, "ips": ips, "routes": routes });
    let dns = ours
        .get("dns")
        .filter(|d| d.as_object().is_some_and(|o| !o.is_empty()))
        .or_else(|| prev.get("dns"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    out["dns"] = dns;
    Ok(out)
}

/// A CNI error as written on stdout.
#[derive(Debug)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: Option<String>,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({ "cniVersion": version, "code": self.code, "msg": self.msg });
        if let Some(d) = &self.details {
            v["details"] = json!(d);
        }
        v
    }
}

/// Well-known error codes (spec section "Error codes"); 100+ are rete's.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const CONFLICT: u32 = 100;
    pub const EXHAUSTED: u32 = 101;
    pub const KERNEL: u32 = 102;
}

/// Parses CNI_ARGS ("K=V;K2=V2").
pub fn parse_args(s: &str) -> BTreeMap<String, String> {
    s.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some("02:42:0a:00:00:02".into()),
                sandbox: Some("/run/netns/x".into()),
                mtu: Some(1500),
            }],
            ips: vec![IpConfig {
                address: "10.0.0.2/24".into(),
                gateway: Some("10.0.0.1".into()),
                interface: Some(0),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.0.0.1".into()),
            }],
            dns: None,
        }
    }

    #[test]
    fn old_versions_tag_ip_families() {
        let v = sample().to_json("0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        assert!(v["interfaces"][0].get("mtu").is_none());
        let v = sample().to_json("1.1.0");
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["interfaces"][0]["mtu"], 1500);
    }

    #[test]
    fn merge_shifts_interface_indexes() {
        let prev =
            json!({"cniVersion": "1.0.0", "interfaces": [{"name": "a"}, {"name": "b"}], "ips": []});
        let merged = merge(&prev, sample().to_json("1.0.0"), "1.0.0").unwrap();
        assert_eq!(merged["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(merged["ips"][0]["interface"], 2);
        assert!(merge(&json!([1]), json!({}), "1.0.0").is_err());
        assert!(merge(&json!({"ips": 3}), json!({}), "1.0.0").is_err());
    }

    #[test]
    fn cni_args() {
        let a = parse_args("IgnoreUnknown=1;IP=10.0.0.5;MAC=02:00:00:00:00:01");
        assert_eq!(a["IP"], "10.0.0.5");
        assert_eq!(a["MAC"], "02:00:00:00:00:01");
    }
}
