//! A CNI runtime for tests: what libcni does with a network configuration
//! list, done by hand so every byte a plugin sees is visible here.
//!
//! - Each plugin's configuration is the list's element with the list's
//!   `name` and `cniVersion` injected; capability arguments go into its
//!   `runtimeConfig` only when its `capabilities` declare them.
//! - ADD runs the plugins in order, each getting the previous one's result as
//!   `prevResult`; the final result is cached per network, container and
//!   interface.
//! - DEL runs them in reverse, with the cached result as `prevResult` (from
//!   0.4.0 on), and forgets the cache; CHECK runs them in order with the
//!   cached result (0.4.0 and later).
//! - STATUS and GC (`cni.dev/valid-attachments`) go to every plugin from
//!   1.1.0 on; VERSION asks one plugin.
//!
//! Plugins are found by type in CNI_PATH (the lab's rete install dir, then
//! /usr/lib/cni for the Debian reference plugins) and run inside the lab's
//! host namespace with a clean environment: PATH, rete's store dirs and the
//! CNI_* variables. Every run has a deadline; a plugin still running then is
//! killed. stdout is parsed as a result or, on a non-zero exit, as an error.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::common::{enter_on_exec, Lab};

/// Where Debian's containernetworking-plugins installs the reference plugins.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Every result version rete writes.
pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A network configuration list (a conflist).
#[derive(Debug, Clone)]
pub struct NetList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
}

impl NetList {
    /// Loads a conflist; panics on one a runtime would refuse.
    pub fn parse(text: &str) -> NetList {
        let v: Value = serde_json::from_str(text).expect("conflist is JSON");
        let name = v["name"].as_str().expect("conflist has a name").to_string();
        let cni_version = v["cniVersion"]
            .as_str()
            .expect("conflist has a cniVersion")
            .to_string();
        let plugins = v["plugins"]
            .as_array()
            .expect("conflist has plugins")
            .clone();
        assert!(!plugins.is_empty(), "conflist {name} has no plugins");
        for p in &plugins {
            assert!(p["type"].is_string(), "every plugin needs a type: {p}");
        }
        NetList {
            name,
            cni_version,
            plugins,
        }
    }

    pub fn from_value(v: Value) -> NetList {
        NetList::parse(&v.to_string())
    }

    /// The configuration plugin `i` gets: its element with the list's name and
    /// version, the capability arguments it declares as `runtimeConfig`, and
    /// `prevResult` when given.
    pub fn plugin_conf(&self, i: usize, rt: Option<&RuntimeConf>, prev: Option<&Value>) -> Value {
        let mut conf = self.plugins[i].clone();
        let obj = conf
            .as_object_mut()
            .expect("plugin configuration is an object");
        obj.insert("name".into(), json!(self.name));
        obj.insert("cniVersion".into(), json!(self.cni_version));
        if let Some(rt) = rt {
            let declared = obj
                .get("capabilities")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let mut runtime = Map::new();
            for (cap, on) in declared {
                if on.as_bool() == Some(true) {
                    if let Some(arg) = rt.caps.get(&cap) {
                        runtime.insert(cap, arg.clone());
                    }
                }
            }
            if !runtime.is_empty() {
                obj.insert("runtimeConfig".into(), Value::Object(runtime));
            }
        }
        if let Some(p) = prev {
            obj.insert("prevResult".into(), p.clone());
        }
        conf
    }

    pub fn kind(&self, i: usize) -> &str {
        self.plugins[i]["type"].as_str().unwrap()
    }

    fn at_least(&self, v: &str) -> bool {
        version_ge(&self.cni_version, v)
    }
}

/// One attachment: what libcni's RuntimeConf carries.
#[derive(Debug, Clone)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// CNI_ARGS, in order.
    pub args: Vec<(String, String)>,
    /// Capability arguments by capability name (portMappings, ips, mac, ...).
    pub caps: Map<String, Value>,
}

impl RuntimeConf {
    pub fn new(container_id: &str, netns: &Path) -> RuntimeConf {
        RuntimeConf {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: "eth0".into(),
            args: Vec::new(),
            caps: Map::new(),
        }
    }

    pub fn ifname(mut self, name: &str) -> Self {
        self.ifname = name.into();
        self
    }

    pub fn arg(mut self, k: &str, v: &str) -> Self {
        self.args.push((k.into(), v.into()));
        self
    }

    pub fn cap(mut self, name: &str, v: Value) -> Self {
        self.caps.insert(name.into(), v);
        self
    }

    fn cni_args(&self) -> String {
        self.args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// What one plugin process did.
#[derive(Debug, Clone)]
pub struct Exec {
    pub plugin: String,
    pub command: String,
    /// The exit code; None if it was killed (at the deadline or by a signal).
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Exec {
    pub fn success(&self) -> bool {
        self.exit == Some(0)
    }

    /// stdout as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(self.stdout.trim()).ok()
    }

    /// The spec's reading of a run: exit 0 is success (with the result on
    /// stdout, if any); anything else is a failure whose stdout must be an
    /// error object.
    pub fn outcome(self) -> Result<Option<Value>, Failure> {
        if self.success() {
            if self.stdout.trim().is_empty() {
                return Ok(None);
            }
            return match self.json() {
                Some(v) => Ok(Some(v)),
                None => Err(Failure::from_exec(
                    self,
                    "exited 0 but stdout is not JSON".into(),
                )),
            };
        }
        let why = match self.json() {
            Some(e) if e["code"].is_u64() && e["msg"].is_string() => String::new(),
            Some(_) => "error output lacks code or msg".into(),
            None => "failed without a JSON error on stdout".into(),
        };
        Err(Failure::from_exec(self, why))
    }
}

/// A failed plugin run, or a run the runtime refuses (a result it cannot
/// read).
#[derive(Debug, Clone)]
pub struct Failure {
    pub exec: Box<Exec>,
    /// The error code from stdout, when the plugin wrote a proper error.
    pub code: Option<u64>,
    pub msg: String,
    /// What the runtime itself found wrong (empty for a proper plugin error).
    pub runtime: String,
}

impl Failure {
    fn from_exec(exec: Exec, runtime: String) -> Failure {
        let v = exec.json().unwrap_or(Value::Null);
        Failure {
            code: v["code"].as_u64(),
            msg: v["msg"].as_str().unwrap_or_default().to_string(),
            runtime,
            exec: Box::new(exec),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} failed (exit {:?}, code {:?}): {} {}\nstdout: {}\nstderr: {}",
            self.exec.plugin,
            self.exec.command,
            self.exec.exit,
            self.code,
            self.msg,
            self.runtime,
            self.exec.stdout.trim(),
            self.exec.stderr.trim()
        )
    }
}

/// The runtime: plugin dirs, result cache, the namespace plugins run in.
pub struct Runner {
    /// Where `rete cni install` put rete and rete-ipam.
    pub bin_dir: PathBuf,
    pub cache_dir: PathBuf,
    host: PathBuf,
    store_env: Vec<(String, String)>,
    /// Deadline of one plugin run.
    pub timeout: Duration,
}

impl Runner {
    /// Installs rete into the lab's CNI dir with `rete cni install` and
    /// returns a runner that executes plugins in the lab's host namespace.
    pub fn install(lab: &Lab) -> Runner {
        let bin_dir = lab.dir.join("cni-bin");
        let out = lab.rete_ok(&["cni", "install", "--dir", bin_dir.to_str().unwrap()]);
        assert_eq!(out.trim(), bin_dir.join("rete").display().to_string());
        let link = std::fs::read_link(bin_dir.join("rete-ipam")).expect("rete-ipam is a link");
        assert_eq!(link, PathBuf::from("rete"), "rete-ipam links to rete");
        Runner {
            cache_dir: lab.dir.join("cni-cache"),
            bin_dir,
            host: lab.host.clone(),
            // rete's dirs exactly as the lab's CLI gets them.
            store_env: lab
                .rete_cmd(&[])
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_str()?.into(), v?.to_str()?.into())))
                .collect(),
            timeout: Duration::from_secs(60),
        }
    }

    /// CNI_PATH: rete's dir first, then the reference plugins.
    pub fn cni_path(&self) -> String {
        format!("{}:{REFERENCE_DIR}", self.bin_dir.display())
    }

    /// Finds a plugin by type in CNI_PATH.
    pub fn find(&self, kind: &str) -> Option<PathBuf> {
        [self.bin_dir.clone(), PathBuf::from(REFERENCE_DIR)]
            .into_iter()
            .map(|d| d.join(kind))
            .find(|p| p.exists())
    }

    /// Runs plugin `kind` with `stdin` and exactly the CNI variables in
    /// `cni_env` (CNI_PATH is added unless given), in the host namespace.
    pub fn exec_raw(&self, kind: &str, stdin: &[u8], cni_env: &[(&str, &str)]) -> Exec {
        let path = self
            .find(kind)
            .unwrap_or_else(|| panic!("plugin {kind} is not in {}", self.cni_path()));
        let mut cmd = Command::new(&path);
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .envs(self.store_env.iter().map(|(k, v)| (k, v)));
        if !cni_env.iter().any(|(k, _)| *k == "CNI_PATH") {
            cmd.env("CNI_PATH", self.cni_path());
        }
        cmd.envs(cni_env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        enter_on_exec(&mut cmd, &self.host);
        let command = cni_env
            .iter()
            .find(|(k, _)| *k == "CNI_COMMAND")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        run_bounded(cmd, stdin, self.timeout, kind, &command)
    }

    /// Runs one plugin with one command for an attachment (or none, for
    /// STATUS and GC).
    pub fn exec(&self, kind: &str, command: &str, conf: &Value, rt: Option<&RuntimeConf>) -> Exec {
        let stdin = serde_json::to_vec(conf).unwrap();
        match rt {
            Some(rt) => {
                let netns = rt.netns.display().to_string();
                let args = rt.cni_args();
                self.exec_raw(
                    kind,
                    &stdin,
                    &[
                        ("CNI_COMMAND", command),
                        ("CNI_CONTAINERID", &rt.container_id),
                        ("CNI_NETNS", &netns),
                        ("CNI_IFNAME", &rt.ifname),
                        ("CNI_ARGS", &args),
                    ],
                )
            }
            None => self.exec_raw(kind, &stdin, &[("CNI_COMMAND", command)]),
        }
    }

    /// VERSION of one plugin, asked with `cni_version`.
    pub fn version(&self, kind: &str, cni_version: &str) -> Result<Value, Failure> {
        let exec = self.exec_raw(
            kind,
            json!({ "cniVersion": cni_version }).to_string().as_bytes(),
            &[("CNI_COMMAND", "VERSION")],
        );
        match exec.clone().outcome()? {
            Some(v) => Ok(v),
            None => Err(Failure::from_exec(exec, "VERSION printed nothing".into())),
        }
    }

    /// ADD through the whole list; caches and returns the final result.
    pub fn add(&self, list: &NetList, rt: &RuntimeConf) -> Result<Value, Failure> {
        let mut prev: Option<Value> = None;
        for i in 0..list.plugins.len() {
            let conf = list.plugin_conf(i, Some(rt), prev.as_ref());
            let exec = self.exec(list.kind(i), "ADD", &conf, Some(rt));
            let result = match exec.clone().outcome()? {
                Some(r) => r,
                None => return Err(Failure::from_exec(exec, "ADD printed no result".into())),
            };
            if result["cniVersion"] != json!(list.cni_version) {
                return Err(Failure::from_exec(
                    exec,
                    format!(
                        "result is version {}, the configuration {}",
                        result["cniVersion"], list.cni_version
                    ),
                ));
            }
            prev = Some(result);
        }
        let result = prev.expect("a list has plugins");
        std::fs::create_dir_all(&self.cache_dir).unwrap();
        let cached = json!({
            "kind": "cniCacheV1",
            "containerId": rt.container_id,
            "ifName": rt.ifname,
            "networkName": list.name,
            "result": result,
        });
        std::fs::write(self.cache_file(list, rt), cached.to_string()).unwrap();
        Ok(result)
    }

    /// The cached result of an attachment.
    pub fn cached(&self, list: &NetList, rt: &RuntimeConf) -> Option<Value> {
        let text = std::fs::read_to_string(self.cache_file(list, rt)).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        Some(v["result"].clone())
    }

    /// DEL through the list in reverse; the cache goes on success.
    pub fn del(&self, list: &NetList, rt: &RuntimeConf) -> Result<(), Failure> {
        let cached = self.cached(list, rt);
        let prev = if list.at_least("0.4.0") {
            cached.as_ref()
        } else {
            None
        };
        for i in (0..list.plugins.len()).rev() {
            let conf = list.plugin_conf(i, Some(rt), prev);
            self.exec(list.kind(i), "DEL", &conf, Some(rt)).outcome()?;
        }
        let _ = std::fs::remove_file(self.cache_file(list, rt));
        Ok(())
    }

    /// CHECK through the list with the cached result (0.4.0 and later).
    pub fn check(&self, list: &NetList, rt: &RuntimeConf) -> Result<(), Failure> {
        assert!(list.at_least("0.4.0"), "CHECK needs 0.4.0 or later");
        let cached = self
            .cached(list, rt)
            .expect("CHECK of an attachment that was never added");
        for i in 0..list.plugins.len() {
            let conf = list.plugin_conf(i, Some(rt), Some(&cached));
            self.exec(list.kind(i), "CHECK", &conf, Some(rt))
                .outcome()?;
        }
        Ok(())
    }

    /// STATUS of every plugin (1.1.0; earlier lists are always ready).
    pub fn status(&self, list: &NetList) -> Result<(), Failure> {
        if !list.at_least("1.1.0") {
            return Ok(());
        }
        for i in 0..list.plugins.len() {
            let conf = list.plugin_conf(i, None, None);
            self.exec(list.kind(i), "STATUS", &conf, None).outcome()?;
        }
        Ok(())
    }

    /// GC with the attachments still valid (1.1.0), then forgets the cached
    /// results of the others. libcni also DELs those stale cached
    /// attachments before its GC; this runner leaves that to the plugins' GC,
    /// which is what the tests exercise.
    pub fn gc(&self, list: &NetList, valid: &[&RuntimeConf]) -> Result<(), Failure> {
        if list.at_least("1.1.0") {
            let attachments: Vec<Value> = valid
                .iter()
                .map(|rt| json!({ "containerID": rt.container_id, "ifname": rt.ifname }))
                .collect();
            for i in 0..list.plugins.len() {
                let mut conf = list.plugin_conf(i, None, None);
                conf["cni.dev/valid-attachments"] = json!(attachments);
                self.exec(list.kind(i), "GC", &conf, None).outcome()?;
            }
        }
        let keep: Vec<PathBuf> = valid.iter().map(|rt| self.cache_file(list, rt)).collect();
        let prefix = format!("{}-", list.name);
        if let Ok(dir) = std::fs::read_dir(&self.cache_dir) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && !keep.contains(&e.path()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    fn cache_file(&self, list: &NetList, rt: &RuntimeConf) -> PathBuf {
        self.cache_dir
            .join(format!("{}-{}-{}", list.name, rt.container_id, rt.ifname))
    }
}

/// Runs `cmd` with `stdin`, killing it at the deadline.
fn run_bounded(
    mut cmd: Command,
    stdin: &[u8],
    timeout: Duration,
    kind: &str,
    command: &str,
) -> Exec {
    let deadline = Instant::now() + timeout;
    let mut child = cmd.spawn().expect("spawn plugin");
    {
        let mut input = child.stdin.take().unwrap();
        // A plugin that exits without reading its input is fine.
        let _ = input.write_all(stdin);
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let reader_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        match child.try_wait().expect("wait for plugin") {
            Some(s) => break Some(s),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    let stdout = reader_out.join().unwrap_or_default();
    let mut stderr = reader_err.join().unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("(killed: still running after {timeout:?})"));
    }
    Exec {
        plugin: kind.into(),
        command: command.into(),
        exit: status.and_then(|s| s.code()),
        stdout,
        stderr,
    }
}

pub fn version_ge(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) >= parse(b)
}

/// A container namespace for CNI, pinned in the lab's netns dir (so the lab
/// removes it on drop).
pub fn container_ns(lab: &Lab, name: &str) -> PathBuf {
    let p = lab.netns_dir().join(name);
    rete::netns::create(&p).expect("create container namespace");
    p
}

/// The IPv4 address (without prefix) of the first IPv4 entry of a result.
pub fn ip4_of(result: &Value) -> std::net::IpAddr {
    result["ips"]
        .as_array()
        .expect("result has ips")
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .find(std::net::IpAddr::is_ipv4)
        .unwrap_or_else(|| panic!("no IPv4 address in {result}"))
}

/// Asserts the shape a result of `version` must have for one attachment in
/// `netns` named `ifname`: cniVersion, ips with `version` only before 1.0.0,
/// each pointing at an interface in the sandbox, and at least `routes` routes.
pub fn assert_result_shape(result: &Value, version: &str, netns: &Path, ifname: &str) {
    assert_eq!(result["cniVersion"], json!(version), "{result}");
    let interfaces = result["interfaces"]
        .as_array()
        .unwrap_or_else(|| panic!("no interfaces in {result}"));
    let sandbox = netns.display().to_string();
    let inner = interfaces
        .iter()
        .position(|i| i["name"] == json!(ifname) && i["sandbox"] == json!(sandbox))
        .unwrap_or_else(|| panic!("no interface {ifname} in sandbox {sandbox}: {result}"));
    assert!(
        interfaces[inner]["mac"]
            .as_str()
            .is_some_and(|m| m.len() == 17),
        "the sandbox interface has a MAC: {result}"
    );
    let ips = result["ips"].as_array().expect("ips");
    assert!(!ips.is_empty(), "no ips in {result}");
    for ip in ips {
        let address = ip["address"].as_str().expect("address");
        let (addr, prefix) = address.split_once('/').expect("CIDR address");
        let addr: std::net::IpAddr = addr.parse().expect("address is an IP");
        assert!(prefix.parse::<u8>().is_ok(), "{address}");
        if version.starts_with("0.") {
            let family = if addr.is_ipv4() { "4" } else { "6" };
            assert_eq!(
                ip["version"],
                json!(family),
                "{version} tags families: {ip}"
            );
        } else {
            assert!(
                ip.get("version").is_none(),
                "{version} has no ip version: {ip}"
            );
        }
        assert_eq!(
            ip["interface"].as_u64(),
            Some(inner as u64),
            "ip points at the sandbox interface: {result}"
        );
        if let Some(g) = ip.get("gateway") {
            g.as_str()
                .expect("gateway is a string")
                .parse::<std::net::IpAddr>()
                .expect("gateway is an IP");
        }
    }
    let routes = result["routes"].as_array().expect("routes");
    for r in routes {
        assert!(r["dst"].as_str().is_some_and(|d| d.contains('/')), "{r}");
    }
    assert!(
        routes.iter().any(|r| r["dst"] == "0.0.0.0/0"),
        "a default route: {result}"
    );
}
