//! Bad CNI input: each case gets the spec's error code in a JSON error on
//! stdout, a non-zero exit, and changes nothing (rete's containers and
//! networks, the host's links, the firewall, the container namespace).

mod cni_runner;
mod common;

use std::path::{Path, PathBuf};

use cni_runner::*;
use common::*;
use serde_json::{json, Value};

#[derive(Debug, PartialEq)]
struct Snapshot {
    containers: Value,
    networks: Value,
    links: Vec<String>,
    nft: String,
    sandbox: String,
}

fn snapshot(lab: &Lab, sandbox: &Path) -> Snapshot {
    let json = |args: &[&str]| -> Value {
        serde_json::from_str(&lab.rete_ok(args)).expect("rete prints JSON")
    };
    Snapshot {
        containers: json(&["ls", "--format", "json"]),
        networks: json(&["network", "ls", "--format", "json"]),
        links: lab.host_links(),
        nft: lab.nft(),
        sandbox: sh_in(sandbox, "ip -o link show; ip -o addr show"),
    }
}

/// The lab, with network "web" and container "a" attached through CNI.
struct Setup {
    lab: Lab,
    runner: Runner,
    list: NetList,
    /// An empty container namespace for the bad requests.
    ns: PathBuf,
}

fn setup(name: &str) -> Setup {
    let lab = Lab::new(name);
    let runner = Runner::install(&lab);
    let list = NetList::from_value(json!({
        "cniVersion": "1.1.0",
        "name": "web",
        "plugins": [{
            "type": "rete",
            "capabilities": { "portMappings": true },
            "ipam": { "ranges": [[{ "subnet": "10.101.0.0/24" }]] }
        }]
    }));
    let a = RuntimeConf::new("a", &container_ns(&lab, "a")).cap(
        "portMappings",
        json!([{ "hostPort": 8080, "containerPort": 80 }]),
    );
    runner.add(&list, &a).unwrap_or_else(|e| panic!("{e}"));
    let ns = container_ns(&lab, "bad");
    Setup {
        lab,
        runner,
        list,
        ns,
    }
}

impl Setup {
    /// The configuration of the list's plugin for container "bad", as JSON
    /// text, edited by `edit`.
    fn conf(&self, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let rt = RuntimeConf::new("bad", &self.ns);
        let mut c = self.list.plugin_conf(0, Some(&rt), None);
        edit(&mut c);
        serde_json::to_vec(&c).unwrap()
    }

    fn env(&self, command: &'static str) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", command.into()),
            ("CNI_CONTAINERID", "bad".into()),
            ("CNI_NETNS", self.ns.display().to_string()),
            ("CNI_IFNAME", "eth0".into()),
        ]
    }

    /// Runs `kind` and asserts a spec error `code` whose message mentions
    /// `needle`, and no change.
    fn rejected(
        &self,
        what: &str,
        kind: &str,
        stdin: &[u8],
        env: &[(&str, String)],
        code: u64,
        needle: &str,
    ) {
        let before = snapshot(&self.lab, &self.ns);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let exec = self.runner.exec_raw(kind, stdin, &env);
        assert_ne!(exec.exit, Some(0), "{what}: should fail: {exec:?}");
        assert!(exec.exit.is_some(), "{what}: killed: {exec:?}");
        let err = exec
            .json()
            .unwrap_or_else(|| panic!("{what}: stdout is not a JSON error: {exec:?}"));
        assert_eq!(err["code"], json!(code), "{what}: {err}");
        let msg = err["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{what}: message should mention {needle:?}: {err}"
        );
        assert!(err["cniVersion"].is_string(), "{what}: {err}");
        let after = snapshot(&self.lab, &self.ns);
        assert_eq!(before, after, "{what}: failed but changed state");
    }
}

fn without(env: &[(&'static str, String)], var: &str) -> Vec<(&'static str, String)> {
    env.iter().filter(|(k, _)| *k != var).cloned().collect()
}

fn with(env: &[(&'static str, String)], var: &'static str, v: &str) -> Vec<(&'static str, String)> {
    let mut e = without(env, var);
    e.push((var, v.into()));
    e
}

#[test]
fn malformed_json_and_unknown_versions() {
    require_root!();
    let s = setup("cni-bad-decode");
    let add = s.env("ADD");
    for kind in ["rete", "rete-ipam"] {
        s.rejected(
            "malformed JSON",
            kind,
            br#"{"cniVersion": "1.1.0", "name": "web", "type": "rete""#,
            &add,
            6,
            "decode",
        );
        s.rejected("not an object", kind, b"[1, 2]", &add, 6, "decode");
        for v in ["9.9.9", "0.2.0", "0.1.0", ""] {
            let conf = s.conf(|c| c["cniVersion"] = json!(v));
            s.rejected(
                &format!("cniVersion {v:?}"),
                kind,
                &conf,
                &add,
                1,
                "cniVersion",
            );
        }
    }
}

#[test]
fn missing_or_bad_environment() {
    require_root!();
    let s = setup("cni-bad-env");
    let conf = s.conf(|_| {});
    let add = s.env("ADD");
    for kind in ["rete", "rete-ipam"] {
        // Set but empty is how a Go runtime's missing variable looks to the
        // plugin, too (os.Getenv).
        s.rejected(
            "empty CNI_COMMAND",
            kind,
            &conf,
            &with(&add, "CNI_COMMAND", ""),
            4,
            "CNI_COMMAND",
        );
        s.rejected(
            "unknown CNI_COMMAND",
            kind,
            &conf,
            &with(&add, "CNI_COMMAND", "FROB"),
            4,
            "CNI_COMMAND",
        );
        for var in ["CNI_CONTAINERID", "CNI_IFNAME"] {
            for cmd in ["ADD", "DEL", "CHECK"] {
                let env = s.env(cmd);
                let conf = if cmd == "ADD" {
                    conf.clone()
                } else {
                    s.conf(|c| c["prevResult"] = json!({"cniVersion": "1.1.0", "ips": []}))
                };
                s.rejected(
                    &format!("{cmd} without {var}"),
                    kind,
                    &conf,
                    &without(&env, var),
                    4,
                    var,
                );
            }
        }
        s.rejected(
            "ifname of 16 bytes",
            kind,
            &conf,
            &with(&add, "CNI_IFNAME", "eth0123456789012"),
            4,
            "CNI_IFNAME",
        );
    }
    // Only the rete type enters the namespace.
    s.rejected(
        "ADD without CNI_NETNS",
        "rete",
        &conf,
        &without(&add, "CNI_NETNS"),
        4,
        "CNI_NETNS",
    );
    s.rejected(
        "ADD in a namespace that does not exist",
        "rete",
        &conf,
        &with(&add, "CNI_NETNS", "/nonexistent/netns"),
        4,
        "CNI_NETNS",
    );
    s.rejected(
        "CHECK without CNI_NETNS",
        "rete",
        &s.conf(|c| c["prevResult"] = json!({"cniVersion": "1.1.0"})),
        &without(&s.env("CHECK"), "CNI_NETNS"),
        4,
        "CNI_NETNS",
    );
}

/// A runtime that forgets CNI_COMMAND altogether: rete's binary is also
/// its CLI, which it must not become when called as a plugin.
#[test]
fn absent_cni_command() {
    require_root!();
    let s = setup("cni-bad-nocmd");
    let conf = s.conf(|_| {});
    let env = without(&s.env("ADD"), "CNI_COMMAND");
    for kind in ["rete", "rete-ipam"] {
        s.rejected("no CNI_COMMAND", kind, &conf, &env, 4, "CNI_COMMAND");
    }
}

#[test]
fn interface_already_in_the_namespace() {
    require_root!();
    let s = setup("cni-bad-ifexists");
    sh_in(&s.ns, "ip link add eth0 type veth peer name peer0");
    let add = s.env("ADD");
    s.rejected(
        "ADD of an existing eth0",
        "rete",
        &s.conf(|_| {}),
        &add,
        4,
        "eth0",
    );
    // Also when the network would be new: it is not left behind.
    let conf = s.conf(|c| {
        c["name"] = json!("fresh");
        c["ipam"]["ranges"][0][0]["subnet"] = json!("10.102.0.0/24");
    });
    s.rejected(
        "ADD of an existing eth0 to a new network",
        "rete",
        &conf,
        &add,
        4,
        "eth0",
    );
}

#[test]
fn malformed_prev_result() {
    require_root!();
    let s = setup("cni-bad-prev");
    let add = s.env("ADD");
    for (what, prev) in [
        ("a string", json!("not a result")),
        ("a list", json!([1, 2])),
        (
            "interfaces not a list",
            json!({"cniVersion": "1.1.0", "interfaces": "eth0"}),
        ),
        (
            "ips not a list",
            json!({"cniVersion": "1.1.0", "ips": {"address": "10.0.0.2/24"}}),
        ),
        (
            "routes not a list",
            json!({"cniVersion": "1.1.0", "routes": 3}),
        ),
    ] {
        let conf = s.conf(|c| c["prevResult"] = prev.clone());
        s.rejected(
            &format!("prevResult {what}"),
            "rete",
            &conf,
            &add,
            6,
            "prevResult",
        );
    }
}

#[test]
fn unsupported_ipam_type() {
    require_root!();
    let s = setup("cni-bad-ipam");
    for kind in ["dhcp", "static", "whereabouts"] {
        let conf = s.conf(|c| c["ipam"]["type"] = json!(kind));
        s.rejected(
            &format!("ipam type {kind}"),
            "rete",
            &conf,
            &s.env("ADD"),
            2,
            "ipam.type",
        );
    }
}

#[test]
fn check_of_unknown_container_and_old_version() {
    require_root!();
    let s = setup("cni-bad-check");
    let prev = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{ "name": "eth0", "sandbox": s.ns.display().to_string() }],
        "ips": [{ "address": "10.101.0.9/24", "interface": 0 }]
    });
    let conf = s.conf(|c| c["prevResult"] = prev.clone());
    s.rejected(
        "CHECK of an unknown container",
        "rete",
        &conf,
        &s.env("CHECK"),
        3,
        "bad",
    );
    s.rejected(
        "rete-ipam CHECK of an unknown container",
        "rete-ipam",
        &conf,
        &s.env("CHECK"),
        3,
        "bad",
    );
    // "a" exists but has no net1.
    let mut env = with(&s.env("CHECK"), "CNI_CONTAINERID", "a");
    env = with(&env, "CNI_IFNAME", "net1");
    env = with(
        &env,
        "CNI_NETNS",
        &s.lab.netns_dir().join("a").display().to_string(),
    );
    s.rejected(
        "CHECK of an unknown interface",
        "rete",
        &conf,
        &env,
        3,
        "net1",
    );

    // CHECK came with 0.4.0; a 0.3.1 configuration is refused, also for a
    // container that exists.
    for v in ["0.3.0", "0.3.1"] {
        let conf = s.conf(|c| {
            c["cniVersion"] = json!(v);
            c["prevResult"] = json!({"cniVersion": v, "ips": []});
        });
        let env = with(&s.env("CHECK"), "CNI_CONTAINERID", "a");
        let env = with(
            &env,
            "CNI_NETNS",
            &s.lab.netns_dir().join("a").display().to_string(),
        );
        for kind in ["rete", "rete-ipam"] {
            s.rejected(
                &format!("{kind} CHECK with {v}"),
                kind,
                &conf,
                &env,
                1,
                "CHECK",
            );
        }
    }
}

/// Refused ADDs that would have made a new network leave none behind:
/// another container's host port (rete's 100, conflict) and an existing
/// network's name with other subnets (7).
#[test]
fn refused_add_leaves_no_new_network() {
    require_root!();
    let s = setup("cni-bad-newnet");
    let add = s.env("ADD");
    let conf = s.conf(|c| {
        c["name"] = json!("fresh");
        c["ipam"]["ranges"][0][0]["subnet"] = json!("10.103.0.0/24");
        c["runtimeConfig"] = json!({ "portMappings": [{ "hostPort": 8080, "containerPort": 80 }] });
    });
    s.rejected(
        "ADD of a host port that a holds",
        "rete",
        &conf,
        &add,
        100,
        "8080",
    );
    let conf = s.conf(|c| c["ipam"]["ranges"][0][0]["subnet"] = json!("10.104.0.0/24"));
    s.rejected(
        "ADD to web with other subnets",
        "rete",
        &conf,
        &add,
        7,
        "10.101.0.0/24",
    );
}
