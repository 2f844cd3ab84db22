//! rete as Podman's network backend: a drop-in for netavark. Installed under
//! the name `netavark` in a directory listed first in Podman's
//! `helper_binaries_dir`, it speaks netavark 1.4's command line: global
//! flags, then `setup NETNS`, `teardown NETNS`, `create`, `update`,
//! `version` or `firewall-reload`, with Podman's JSON on stdin (or --file).
//! Results go to stdout as JSON; failures as `{"error": "..."}` on stdout
//! with exit status 1, as netavark reports them to Podman.
//!
//! rete's store is where RETE_STATE_DIR and RETE_RUN_DIR say (Podman passes
//! its environment on), else the defaults. Rootless Podman calls it as root
//! of the user's namespaces, inside its rootless network namespace, with
//! `--rootless=true`: rete works there as on a host of its own, with the
//! user's store under Podman's `--config` directory.

mod create;
mod setup;
mod translate;
mod wire;

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use rete::{Engine, Paths};

/// A failure, as Podman will show it.
#[derive(Debug)]
pub struct Failure(pub String);

impl From<rete::Error> for Failure {
    fn from(e: rete::Error) -> Self {
        Failure(e.to_string())
    }
}

#[derive(Parser)]
#[command(
    name = "netavark",
    version,
    about = "rete, speaking netavark's protocol: Podman's network backend"
)]
struct Args {
    /// Podman's directory for netavark's files. Rootless, rete keeps its
    /// store under it (in `rete/`); as root, where RETE_STATE_DIR says.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Whether Podman runs rootless: rete then runs as root of the user's
    /// namespaces, inside Podman's rootless network namespace, with its
    /// store under --config.
    #[arg(short, long)]
    rootless: Option<bool>,
    /// Path to aardvark-dns; rete resolves names itself.
    #[arg(short, long)]
    aardvark_binary: Option<PathBuf>,
    /// Accepted for compatibility; rete always programs its own nftables
    /// table.
    #[arg(long)]
    firewall_driver: Option<String>,
    /// Read the request from this file instead of stdin.
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// Accepted for compatibility; rete's resolver listens on port 53.
    #[arg(long)]
    dns_port: Option<u16>,
    /// Accepted for compatibility; rete runs no driver plugins.
    #[arg(long)]
    plugin_directory: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attaches the namespace to the networks of the request; prints a
    /// status block per network.
    Setup { netns: PathBuf },
    /// Detaches the namespace from the networks of the request.
    Teardown { netns: PathBuf },
    /// Validates and completes a network configuration; prints it.
    Create,
    /// Changes a network's DNS servers. rete's resolver forwards to the
    /// host's resolvers, so this is accepted and changes nothing.
    Update {
        #[arg(long, value_delimiter = ',')]
        network_dns_servers: Vec<String>,
        network: String,
    },
    /// Prints version information as JSON.
    Version,
    /// Restores rete's firewall table from the store (after a flush).
    #[command(alias = "firewalld-reload")]
    FirewallReload,
}

/// Runs one invocation; returns the exit status.
pub fn main() -> i32 {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return 0;
        }
        Err(e) => return fail(&Failure(e.to_string().trim().to_string())),
    };
    match run(args) {
        Ok(Some(out)) => {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{out}");
            0
        }
        Ok(None) => 0,
        Err(f) => fail(&f),
    }
}

fn fail(f: &Failure) -> i32 {
    let reply = serde_json::to_string(&wire::ErrorReply { error: &f.0 })
        .unwrap_or_else(|_| "{\"error\":\"unprintable error\"}".into());
    let _ = writeln!(std::io::stdout().lock(), "{reply}");
    1
}

fn run(args: Args) -> Result<Option<String>, Failure> {
    match &args.command {
        Command::Version => Ok(Some(json(&wire::Version {
            version: env!("CARGO_PKG_VERSION"),
            commit: option_env!("RETE_GIT_COMMIT").unwrap_or(""),
            build_time: option_env!("RETE_BUILD_TIME").unwrap_or(""),
            target: format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        }))),
        Command::Create => {
            let req = parse(&read_input(&args)?)?;
            Ok(Some(json(&create::create(req)?)))
        }
        Command::Update {
            network_dns_servers,
            network,
        } => {
            for s in network_dns_servers.iter().filter(|s| !s.is_empty()) {
                s.parse::<std::net::IpAddr>().map_err(|_| {
                    Failure(format!(
                        "network \"{network}\": DNS server \"{s}\" is not an IP address"
                    ))
                })?;
            }
            Ok(None)
        }
        Command::FirewallReload => {
            open_engine(&args)?.reload_firewall()?;
            Ok(None)
        }
        Command::Setup { netns } => {
            let req = parse(&read_input(&args)?)?;
            let blocks = setup::setup(&mut open_engine(&args)?, netns, &req)?;
            Ok(Some(json(&blocks)))
        }
        Command::Teardown { .. } => {
            let req = parse(&read_input(&args)?)?;
            setup::teardown(&mut open_engine(&args)?, &req)?;
            Ok(None)
        }
    }
}

/// Where rete's store is. As root: RETE_* in the environment, else a
/// `rete.env` beside the `netavark` link, else the defaults (the file
/// matters for `podman run --rm`: its teardown runs in `podman container
/// cleanup`, which conmon starts with almost no environment). Rootless:
/// RETE_* in the environment, else under Podman's --config directory,
/// which is the user's and the same for every call of one Podman setup.
fn open_engine(args: &Args) -> Result<Engine, Failure> {
    let paths = if args.rootless == Some(true) {
        let base = args
            .config
            .clone()
            .or_else(|| std::env::var_os("XDG_RUNTIME_DIR").map(|d| PathBuf::from(d).join("containers/networks")))
            .ok_or_else(|| {
                Failure("rootless: give --config DIR (Podman passes its network directory) so rete knows where the user's store is".into())
            })?;
        Paths::under(&base.join("rete"))
    } else {
        let beside = std::env::args_os()
            .next()
            .map(PathBuf::from)
            .and_then(|p| p.parent().map(|d| d.join("rete.env")))
            .unwrap_or_default();
        Paths::from_env_and_file(&beside)
    };
    Engine::open(paths).map_err(|e| Failure(format!("rete's store is unusable: {e}")))
}

fn read_input(args: &Args) -> Result<Vec<u8>, Failure> {
    let mut input = Vec::new();
    match &args.file {
        Some(f) if f.as_os_str() != "-" => {
            input = std::fs::read(f)
                .map_err(|e| Failure(format!("cannot read {}: {e}", f.display())))?
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut input)
                .map_err(|e| Failure(format!("cannot read stdin: {e}")))?;
        }
    }
    Ok(input)
}

fn parse<T: serde::de::DeserializeOwned>(input: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(input).map_err(|e| Failure(format!("invalid request JSON: {e}")))
}

/// Compact JSON, as netavark prints it.
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}
