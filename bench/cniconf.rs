//! Shared by the benchmarks that run CNI plugins (bench/attach.rs,
//! bench/parallel.rs): the network configuration each plugin gets, as a
//! runtime (libcni) hands it over: the conflist's element with the list's
//! `name` and `cniVersion` injected, the capability arguments it declares in
//! `runtimeConfig`, and `prevResult` where the chain has one.
//!
//! Two equivalent networks on 10.200.0.0/16 with one published TCP port per
//! container:
//! - the reference chain: `bridge` (isGateway, ipMasq, host-local IPAM) then
//!   `portmap` (capability portMappings, snat);
//! - rete: one plugin of type `rete` with the same subnet and the same
//!   capability, name resolution off (the chain has no DNS plugin).

#![allow(dead_code)]

use std::path::Path;

use serde_json::{json, Value};

pub const SUBNET: &str = "10.200.0.0/16";
pub const GATEWAY: &str = "10.200.0.1";
pub const CNI_VERSION: &str = "0.4.0";
pub const NETWORK: &str = "bench";

/// The reference `bridge` plugin's configuration (host-local keeps its
/// leases in `ipam_dir`).
pub fn reference_bridge(ipam_dir: &Path) -> String {
    json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "type": "bridge",
        "bridge": "cni-bench",
        "isGateway": true,
        "ipMasq": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": ipam_dir
        }
    })
    .to_string()
}

/// The reference `portmap` plugin's configuration: host port `host_port` to
/// container port 80, after the bridge plugin's result `prev`.
pub fn reference_portmap(host_port: u16, prev: Value) -> String {
    json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "type": "portmap",
        "capabilities": {"portMappings": true},
        "snat": true,
        "runtimeConfig": {"portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]},
        "prevResult": prev
    })
    .to_string()
}

/// The conflist rete is given, as a file would hold it.
pub fn rete_conflist() -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "plugins": [{
            "type": "rete",
            "bridge": "cni-bench",
            "isGateway": true,
            "ipMasq": true,
            "disableDns": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
                "routes": [{"dst": "0.0.0.0/0"}]
            },
            "capabilities": {"portMappings": true}
        }]
    })
}

/// What the `rete` plugin gets for one container: the conflist's only
/// element with name and version, `runtimeConfig.portMappings`, and on DEL
/// the cached ADD result as `prevResult` (libcni does so from 0.4.0 on).
pub fn rete_plugin(host_port: u16, prev: Option<&Value>) -> String {
    let list = rete_conflist();
    let mut conf = list["plugins"][0].clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["runtimeConfig"] = json!({
        "portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]
    });
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    conf.to_string()
}

/// The first IPv4 address of a CNI result (without its prefix length).
pub fn first_address(result: &Value) -> Option<String> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        let a = ip["address"].as_str()?;
        (!a.contains(':')).then(|| a.split('/').next().unwrap_or(a).to_string())
    })
}
