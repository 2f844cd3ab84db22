//! Container commands: create, run, exec, ls, inspect, port, rm, gc.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;

use clap::Args;
use rete::engine::{ContainerRequest, NetworkChoice};
use rete::model::Container;
use rete::portspec::PortSpec;
use rete::{names, Engine, Error, Result};

use super::{key_values, output, Format};

/// Flags shared by `create` and `run`.
#[derive(Args, Clone)]
pub struct ContainerFlags {
    /// A network, or none, host, container:NAME; repeatable for several networks
    #[arg(long = "network", visible_alias = "net")]
    networks: Vec<NetworkChoice>,
    /// IPv4 address on the first network
    #[arg(long)]
    ip: Option<IpAddr>,
    /// IPv6 address on the first network
    #[arg(long)]
    ip6: Option<IpAddr>,
    /// MAC address of the first interface
    #[arg(long)]
    mac: Option<String>,
    /// Publish a port: [IP:][HOSTPORT:]CPORT[/tcp|udp|sctp], ranges allowed
    #[arg(short = 'p', long = "publish")]
    publish: Vec<PortSpec>,
    #[arg(long)]
    hostname: Option<String>,
    /// Another name the container answers to on its networks, repeatable
    #[arg(long = "network-alias")]
    aliases: Vec<String>,
    #[arg(long)]
    label: Vec<String>,
    /// Attach this existing network namespace instead of creating one
    #[arg(long)]
    netns: Option<PathBuf>,
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    flags: ContainerFlags,
    name: String,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    flags: ContainerFlags,
    /// Remove the container when the command exits
    #[arg(long)]
    rm: bool,
    /// Leave the command running in the background
    #[arg(short, long)]
    detach: bool,
    name: String,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct ExecArgs {
    name: String,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct LsArgs {
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    names: Vec<String>,
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
}

#[derive(Args)]
pub struct PortArgs {
    name: String,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Args)]
pub struct RmArgs {
    #[arg(required = true)]
    names: Vec<String>,
    /// Accepted for Docker compatibility: rm always ends the container's processes
    #[arg(short, long)]
    force: bool,
}

#[derive(Args)]
pub struct GcArgs {
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

fn request(name: String, f: ContainerFlags) -> Result<ContainerRequest> {
    Ok(ContainerRequest {
        name,
        networks: f.networks,
        ip: f.ip,
        ip6: f.ip6,
        mac: f.mac.as_deref().map(names::parse_mac).transpose()?,
        ports: f.publish,
        hostname: f.hostname,
        labels: key_values(&f.label, "label")?,
        netns: f.netns,
        aliases: f.aliases,
    })
}

pub fn create(engine: &mut Engine, a: CreateArgs) -> Result<i32> {
    let c = engine.create_container(request(a.name, a.flags)?)?;
    println!("{}", c.name);
    Ok(0)
}

/// `run`: the command's exit status is rete's. Failures of rete itself exit
/// 125, a command that cannot be started 127, as with `docker run`.
pub fn run(engine: &mut Engine, a: RunArgs) -> Result<i32> {
    let (c, created) = match engine.container(&a.name) {
        Ok(c) => (c, false),
        Err(Error::NotFound(_)) => (
            engine.create_container(request(a.name.clone(), a.flags)?)?,
            true,
        ),
        Err(e) => return Err(e),
    };
    if a.detach {
        return detach(engine, &c, a.command, a.rm, created);
    }
    let status = engine.command(&c, &a.command).and_then(|mut cmd| {
        cmd.status()
            .map_err(|e| Error::NotFound(format!("cannot run \"{}\": {e}", a.command[0])))
    });
    if a.rm {
        engine.remove_container(&c.name)?;
    }
    match status {
        Ok(s) => Ok(exit_status(s)),
        Err(e) => {
            eprintln!("rete: {e}");
            Ok(127)
        }
    }
}

fn detach(
    engine: &mut Engine,
    c: &Container,
    command: Vec<String>,
    rm: bool,
    created: bool,
) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let log_dir = engine.paths().run_dir.join("logs");
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| Error::Store(format!("{}: {e}", log_dir.display())))?;
    let log = std::fs::File::create(log_dir.join(format!("{}.log", c.name)))
        .map_err(|e| Error::Store(format!("log file: {e}")))?;
    let mut cmd = if rm {
        // A supervisor (rete itself) waits for the command, then removes the
        // container: --rm needs someone alive when the command ends.
        let exe = std::env::current_exe().map_err(|e| Error::Store(format!("own path: {e}")))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("run")
            .arg("--rm")
            .arg(&c.name)
            .arg("--")
            .args(&command);
        cmd
    } else {
        engine.command(c, &command)?
    };
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| Error::Store(e.to_string()))?)
        .stderr(log)
        .process_group(0);
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            if created {
                engine.remove_container(&c.name)?;
            }
            return Err(Error::NotFound(format!(
                "cannot run \"{}\": {e}",
                command[0]
            )));
        }
    };
    engine.record_process(&c.name, child.id())?;
    println!("{}", c.name);
    Ok(0)
}

fn exit_status(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

pub fn exec(engine: &mut Engine, a: ExecArgs) -> Result<i32> {
    let c = engine.container(&a.name)?;
    let mut cmd = engine.command(&c, &a.command)?;
    match cmd.status() {
        Ok(s) => Ok(exit_status(s)),
        Err(e) => {
            eprintln!("rete: cannot run \"{}\": {e}", a.command[0]);
            Ok(127)
        }
    }
}

pub fn ls(engine: &Engine, a: LsArgs) -> Result<i32> {
    let cs = engine.containers()?;
    if a.format == Format::Json {
        output::json(&cs);
    } else if a.quiet {
        cs.iter().for_each(|c| println!("{}", c.name));
    } else {
        let rows: Vec<Vec<String>> = cs
            .iter()
            .map(|c| {
                vec![
                    c.id[..12].to_string(),
                    c.name.clone(),
                    match c.mode {
                        rete::model::Mode::Bridge => c
                            .endpoints
                            .iter()
                            .map(|e| e.network.clone())
                            .collect::<Vec<_>>()
                            .join(","),
                        ref m => m.to_string(),
                    },
                    c.endpoints
                        .iter()
                        .flat_map(|e| e.addresses.iter().map(|a| a.addr().to_string()))
                        .collect::<Vec<_>>()
                        .join(","),
                    c.ports
                        .iter()
                        .map(short_port)
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            })
            .collect();
        output::table(
            &["CONTAINER ID", "NAME", "NETWORKS", "ADDRESSES", "PORTS"],
            &rows,
        );
    }
    Ok(0)
}

fn short_port(m: &rete::model::PortMapping) -> String {
    let host = match m.host_ip {
        IpAddr::V6(a) => format!("[{a}]"),
        a => a.to_string(),
    };
    format!(
        "{host}:{}->{}/{}",
        m.host_port, m.container_port, m.protocol
    )
}

pub fn inspect(engine: &Engine, a: InspectArgs) -> Result<i32> {
    let cs = a
        .names
        .iter()
        .map(|n| engine.container(n))
        .collect::<Result<Vec<_>>>()?;
    output::json(&cs);
    Ok(0)
}

pub fn port(engine: &Engine, a: PortArgs) -> Result<i32> {
    let c = engine.container(&a.name)?;
    if a.format == Format::Json {
        output::json(&c.ports);
    } else {
        for m in &c.ports {
            println!("{m}");
        }
    }
    Ok(0)
}

pub fn rm(engine: &mut Engine, a: RmArgs) -> Result<i32> {
    for n in a.names {
        engine.remove_container(&n)?;
        println!("{n}");
    }
    Ok(0)
}

pub fn gc(engine: &mut Engine, a: GcArgs) -> Result<i32> {
    let r = engine.gc()?;
    if a.format == Format::Json {
        output::json(&r);
    } else {
        for c in &r.containers {
            println!("removed container {c} (its namespace was gone)");
        }
        for l in &r.links {
            println!("deleted device {l}");
        }
        for n in &r.namespaces {
            println!("removed namespace {}", n.display());
        }
        for b in &r.bridges {
            println!("recreated bridge {b}");
        }
        for c in &r.repaired {
            println!("replumbed lost devices of container {c}");
        }
        for e in &r.fastpath {
            println!("took {e} off the fast path (no container holds it)");
        }
    }
    Ok(0)
}
