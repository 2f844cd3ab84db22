//! rete as a CNI plugin (spec 1.1.0): the `rete` type (a whole attachment:
//! bridge, IPAM, NAT, ports, bandwidth) and `rete-ipam` (rete's IPAM for
//! other plugins). A protocol adapter: it reads the environment and the
//! configuration, calls the engine, writes the result or the error.

mod ipam;
mod plugin;
mod wire;

use std::io::{Read, Write};
use std::path::PathBuf;

use rete::{Engine, Error, Paths};
use wire::{code, CniError, NetConf};

/// Which plugin the binary was invoked as.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rete,
    Ipam,
}

/// The CNI_* environment of one invocation.
pub struct Env {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub args: std::collections::BTreeMap<String, String>,
}

impl Env {
    fn read() -> Env {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            command: var("CNI_COMMAND").unwrap_or_default(),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS").map(PathBuf::from),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS")
                .map(|a| wire::parse_args(&a))
                .unwrap_or_default(),
        }
    }

    /// CNI_CONTAINERID, checked.
    pub fn container(&self) -> Result<&str, CniError> {
        let id = self
            .container_id
            .as_deref()
            .ok_or_else(|| missing("CNI_CONTAINERID"))?;
        rete::names::check_name("container", id).map_err(|e| {
            CniError::new(code::INVALID_ENVIRONMENT, format!("CNI_CONTAINERID: {e}"))
        })?;
        Ok(id)
    }

    /// CNI_IFNAME, checked.
    pub fn ifname(&self) -> Result<&str, CniError> {
        let name = self
            .ifname
            .as_deref()
            .ok_or_else(|| missing("CNI_IFNAME"))?;
        rete::names::check_ifname(name)
            .map_err(|e| CniError::new(code::INVALID_ENVIRONMENT, format!("CNI_IFNAME: {e}")))?;
        Ok(name)
    }

    /// CNI_NETNS, which must exist.
    pub fn netns(&self) -> Result<&PathBuf, CniError> {
        let p = self.netns.as_ref().ok_or_else(|| missing("CNI_NETNS"))?;
        if !p.exists() {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("CNI_NETNS {}: no such network namespace", p.display()),
            ));
        }
        Ok(p)
    }
}

fn missing(var: &str) -> CniError {
    CniError::new(
        code::INVALID_ENVIRONMENT,
        format!("{var} is not set; the runtime must pass it"),
    )
}

/// Runs one plugin invocation; returns the exit code.
pub fn main(kind: Kind) -> i32 {
    let env = Env::read();
    let mut input = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut input);
    let (version, outcome) = run(kind, &env, &input);
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&version));
            1
        }
    }
}

fn run(
    kind: Kind,
    env: &Env,
    input: &[u8],
) -> (String, Result<Option<serde_json::Value>, CniError>) {
    if env.command == "VERSION" {
        let asked: Option<String> = serde_json::from_slice::<serde_json::Value>(input)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_string));
        let version = asked.unwrap_or_else(|| "1.1.0".into());
        let out =
            serde_json::json!({ "cniVersion": version, "supportedVersions": wire::SUPPORTED });
        return (version, Ok(Some(out)));
    }
    let conf: NetConf = match serde_json::from_slice(input) {
        Ok(c) => c,
        Err(e) => {
            let version = serde_json::from_slice::<serde_json::Value>(input)
                .ok()
                .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
                .unwrap_or_else(|| "1.1.0".into());
            return (
                version,
                Err(CniError::new(
                    code::DECODE,
                    format!("cannot decode the network configuration: {e}"),
                )),
            );
        }
    };
    let version = conf.cni_version.clone();
    (version.clone(), dispatch(kind, env, conf, &version))
}

fn dispatch(
    kind: Kind,
    env: &Env,
    conf: NetConf,
    version: &str,
) -> Result<Option<serde_json::Value>, CniError> {
    if !wire::SUPPORTED.contains(&version) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {version} is not supported; use one of {}",
                wire::SUPPORTED.join(", ")
            ),
        ));
    }
    let needs = |min: &str, cmd: &str| -> Result<(), CniError> {
        if version_lt(version, min) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("{cmd} needs cniVersion {min} or later; the configuration says {version}"),
            ));
        }
        Ok(())
    };
    match env.command.as_str() {
        "CHECK" => needs("0.4.0", "CHECK")?,
        "STATUS" | "GC" => needs("1.1.0", &env.command)?,
        "ADD" | "DEL" => {}
        "" => return Err(missing("CNI_COMMAND")),
        other => {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("CNI_COMMAND {other} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
            ))
        }
    }
    rete::names::check_name("network", &conf.name)
        .map_err(|e| CniError::new(code::INVALID_CONFIG, format!("name: {e}")))?;
    let mut engine = open_engine(&conf).map_err(|e| {
        let c = if env.command == "STATUS" {
            code::NOT_AVAILABLE
        } else {
            code::TRY_AGAIN_LATER
        };
        CniError::new(c, format!("rete's store is unusable: {e}"))
    })?;
    match kind {
        Kind::Rete => plugin::run(&mut engine, env, conf, version),
        Kind::Ipam => ipam::run(&mut engine, env, conf, version),
    }
}

fn open_engine(conf: &NetConf) -> rete::Result<Engine> {
    let mut paths = Paths::from_env();
    if let Some(d) = &conf.state_dir {
        paths.state_dir = d.into();
    }
    if let Some(d) = &conf.run_dir {
        paths.run_dir = d.into();
    }
    Engine::open(paths)
}

/// Maps an engine error to the spec's codes.
pub fn engine_error(e: Error) -> CniError {
    let c = match &e {
        Error::Invalid(_) => code::INVALID_CONFIG,
        Error::NotFound(_) => code::UNKNOWN_CONTAINER,
        Error::InterfaceExists(_) => code::INVALID_ENVIRONMENT,
        Error::Conflict(_) | Error::InUse(_) => code::CONFLICT,
        Error::Exhausted(_) => code::EXHAUSTED,
        Error::Store(_) | Error::Cluster(_) => code::TRY_AGAIN_LATER,
        Error::Kernel { .. } | Error::Firewall(_) => code::KERNEL,
    };
    let msg = match &e {
        Error::InterfaceExists(m) => format!("CNI_IFNAME: {m}"),
        other => other.to_string(),
    };
    CniError::new(c, msg)
}

fn version_lt(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) < parse(b)
}
