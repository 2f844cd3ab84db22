//! Command-line parsing and output. Nothing here knows about bridges,
//! addresses or rules: it parses, calls the engine, prints.

mod cluster;
mod container;
mod network;
mod output;
mod tap;

use std::path::PathBuf;

use clap::{Args, Command as ClapCommand, FromArgMatches, Parser, Subcommand, ValueEnum};
use rete::{Engine, Error, Paths};

#[derive(Parser)]
#[command(
    name = "rete",
    version,
    about = "Container networks on the Linux kernel, without a daemon"
)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

/// Flags every subcommand takes.
#[derive(Args)]
struct Globals {
    /// Where the store lives [env: RETE_STATE_DIR; default /var/lib/rete]
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// Runtime files [env: RETE_RUN_DIR; default /run/rete]
    #[arg(long, global = true)]
    run_dir: Option<PathBuf>,
    /// Where container namespaces are pinned [env: RETE_NETNS_DIR; default /run/netns]
    #[arg(long, global = true)]
    netns_dir: Option<PathBuf>,
}

impl Cli {
    /// Parses the process's arguments. `create` and `rm` are the commands
    /// runtimes and scripts call once per container, so they are first
    /// tried against a parser that knows only them: building clap's whole
    /// command tree costs a tenth of a millisecond a call. Anything that
    /// parser does not accept (another command, `--help`, an error) goes to
    /// the full parser, so help and error messages are the same either way.
    fn parse_args() -> Cli {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let hot = args
            .get(1..)
            .unwrap_or_default()
            .iter()
            .any(|a| a == "create" || a == "rm");
        if hot {
            if let Some(cli) = Cli::parse_hot(&args) {
                return cli;
            }
        }
        Cli::parse_from(args)
    }

    fn parse_hot(args: &[std::ffi::OsString]) -> Option<Cli> {
        let tree = Globals::augment_args(ClapCommand::new("rete"))
            .subcommand_required(true)
            .subcommand(container::CreateArgs::augment_args(ClapCommand::new(
                "create",
            )))
            .subcommand(container::RmArgs::augment_args(ClapCommand::new("rm")));
        let matches = tree.try_get_matches_from(args).ok()?;
        let globals = Globals::from_arg_matches(&matches).ok()?;
        let command = match matches.subcommand()? {
            ("create", m) => Command::Create(container::CreateArgs::from_arg_matches(m).ok()?),
            ("rm", m) => Command::Rm(container::RmArgs::from_arg_matches(m).ok()?),
            _ => return None,
        };
        Some(Cli { globals, command })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Manage networks
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Create a container (a network namespace with its endpoints)
    Create(container::CreateArgs),
    /// Create a container if needed and run a command in it
    Run(container::RunArgs),
    /// Run a command in an existing container
    Exec(container::ExecArgs),
    /// List containers
    #[command(alias = "ps")]
    Ls(container::LsArgs),
    /// Show containers in detail (JSON)
    Inspect(container::InspectArgs),
    /// Show a container's published ports
    Port(container::PortArgs),
    /// Remove containers (removing one that does not exist is not an error)
    Rm(container::RmArgs),
    /// Manage tap devices on networks (VM NICs)
    #[command(subcommand)]
    Tap(tap::TapCommand),
    /// Reconcile the kernel with the store after crashes
    Gc(container::GcArgs),
    /// Recreate rete's nftables table from the store
    FirewallReload,
    /// Install rete as a CNI plugin (types `rete` and `rete-ipam`)
    #[command(subcommand)]
    Cni(CniCommand),
    /// Join this host to a cluster through etcd (runs until stopped)
    Agent(cluster::AgentArgs),
    /// Cluster-wide settings in etcd
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// The cluster's hosts
    #[command(subcommand)]
    Node(cluster::NodeCommand),
    /// The name resolver (started by rete on demand)
    #[command(subcommand, hide = true)]
    Dns(DnsCommand),
}

#[derive(Subcommand)]
enum DnsCommand {
    /// Serve names until no DNS-enabled network remains
    Serve,
}

/// Runs the resolver unless one already runs for this run dir.
fn serve_dns(engine: &Engine) -> rete::Result<i32> {
    match rete::dns::service::claim(&engine.paths().run_dir)? {
        Some(lock) => rete::dns::server::serve(engine.paths(), lock).map(|_| 0),
        None => Ok(0),
    }
}

#[derive(Subcommand)]
enum CniCommand {
    /// Copy this binary into the CNI plugin directory as `rete`, with
    /// `rete-ipam` linked to it
    Install {
        #[arg(long, default_value = "/opt/cni/bin")]
        dir: PathBuf,
    },
}

/// Copies the running binary to DIR/rete (through a temporary file and a
/// rename, so a runtime never executes a half-written plugin) and links
/// DIR/rete-ipam to it.
fn install_cni(dir: &std::path::Path) -> rete::Result<i32> {
    let io = |what: &str, e: std::io::Error| Error::Store(format!("{what}: {e}"));
    let exe = std::env::current_exe().map_err(|e| io("find own binary", e))?;
    std::fs::create_dir_all(dir).map_err(|e| io(&dir.display().to_string(), e))?;
    let tmp = dir.join(".rete.tmp");
    std::fs::copy(&exe, &tmp).map_err(|e| io("copy", e))?;
    std::fs::rename(&tmp, dir.join("rete")).map_err(|e| io("rename", e))?;
    let link = dir.join("rete-ipam");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("rete", &link).map_err(|e| io("link rete-ipam", e))?;
    println!("{}", dir.join("rete").display());
    Ok(0)
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse_args();
    let mut paths = Paths::from_env();
    if let Some(d) = cli.globals.state_dir {
        paths.state_dir = d;
    }
    if let Some(d) = cli.globals.run_dir {
        paths.run_dir = d;
    }
    if let Some(d) = cli.globals.netns_dir {
        paths.netns_dir = d;
    }
    let result = Engine::open(paths).and_then(|mut engine| match cli.command {
        Command::Network(c) => network::run(&mut engine, c),
        Command::Create(a) => container::create(&mut engine, a),
        Command::Run(a) => container::run(&mut engine, a),
        Command::Exec(a) => container::exec(&mut engine, a),
        Command::Ls(a) => container::ls(&engine, a),
        Command::Inspect(a) => container::inspect(&engine, a),
        Command::Port(a) => container::port(&engine, a),
        Command::Rm(a) => container::rm(&mut engine, a),
        Command::Tap(c) => tap::run(&mut engine, c),
        Command::Gc(a) => container::gc(&mut engine, a),
        Command::FirewallReload => engine.reload_firewall().map(|_| 0),
        Command::Cni(CniCommand::Install { dir }) => install_cni(&dir),
        Command::Dns(DnsCommand::Serve) => serve_dns(&engine),
        Command::Agent(a) => cluster::agent(&mut engine, a),
        Command::Cluster(c) => cluster::cluster(c),
        Command::Node(c) => cluster::node(c),
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rete: {e}");
            exit_code(&e)
        }
    }
}

/// Exit statuses by error kind, so scripts can tell bad input from a busy
/// resource from a kernel failure.
fn exit_code(e: &Error) -> i32 {
    match e {
        Error::Invalid(_) => 2,
        Error::NotFound(_) => 3,
        Error::Conflict(_) | Error::InUse(_) | Error::InterfaceExists(_) => 4,
        Error::Exhausted(_) => 5,
        _ => 1,
    }
}

/// Parses `k=v` pairs.
fn key_values(
    pairs: &[String],
    what: &str,
) -> rete::Result<std::collections::BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::Invalid(format!(
                "invalid {what} \"{p}\": use KEY=VALUE"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hot(args: &[&str]) -> Option<Cli> {
        let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        Cli::parse_hot(&args)
    }

    #[test]
    fn the_hot_parser_takes_create_and_rm_with_global_flags_anywhere() {
        let cli = hot(&["rete", "--state-dir", "/s", "create", "a", "-p", "80"]).unwrap();
        assert!(matches!(cli.command, Command::Create(_)));
        assert_eq!(cli.globals.state_dir, Some(PathBuf::from("/s")));
        let cli = hot(&["rete", "rm", "a", "b", "--run-dir", "/r"]).unwrap();
        assert!(matches!(cli.command, Command::Rm(_)));
        assert_eq!(cli.globals.run_dir, Some(PathBuf::from("/r")));
    }

    #[test]
    fn the_hot_parser_leaves_help_errors_and_other_commands_to_the_full_one() {
        for args in [
            &["rete", "create", "--help"][..],
            &["rete", "--version", "create", "a"],
            &["rete", "create"],
            &["rete", "create", "a", "--no-such-flag"],
            &["rete", "exec", "rm", "--", "true"],
            &["rete", "network", "create", "n"],
        ] {
            assert!(hot(args).is_none(), "{args:?}");
        }
    }
}
