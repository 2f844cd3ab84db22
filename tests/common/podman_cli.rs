//! What every Podman-driving test asks of Podman, however it runs it (as
//! root with rete as netavark, or rootless): one `cmd` to build a
//! `podman ARGS` command, and the checks on top of it.

use std::net::IpAddr;
use std::process::{Command, Output};

use serde_json::Value;

pub trait PodmanCli {
    /// `podman ARGS`, set up for the lab.
    fn cmd(&self, args: &[&str]) -> Command;

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run podman")
    }

    /// Runs podman and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs podman and asserts failure; returns stderr.
    fn err(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "podman {args:?} should have failed but printed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        v[0].clone()
    }

    fn id_of(&self, name: &str) -> String {
        self.inspect(name)["Id"].as_str().unwrap().to_string()
    }

    /// `podman run --rm` of a busybox shell script on `network`; its stdout.
    fn sh_on(&self, network: &str, script: &str) -> String {
        self.ok(&[
            "run",
            "--rm",
            "--network",
            network,
            "localhost/busybox",
            "sh",
            "-c",
            script,
        ])
    }

    /// The container's IPv4 address on `network`, as Podman reports it.
    fn ip_of(&self, name: &str, network: &str) -> IpAddr {
        self.inspect(name)["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no address on {network}"))
            .parse()
            .unwrap()
    }
}

/// A containers.conf with rete as netavark (the `netavark` in `bin`), the
/// runtime settings this machine kind needs, and `engine_extra` lines.
pub fn containers_conf(bin: &std::path::Path, engine_extra: &str) -> String {
    let (nofile, nproc) = ulimits();
    format!(
        r#"[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]

[engine]
helper_binaries_dir = ["{bin}", "/usr/lib/podman"]
network_backend = "netavark"
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
{engine_extra}"#,
        bin = bin.display()
    )
}

/// Limits containers may have here: Podman's defaults (nofile 1048576)
/// exceed the hard limits of this machine's sandbox, so `--ulimit host`
/// fails in runc; the current hard limits always work.
pub fn ulimits() -> (u64, u64) {
    let hard = |r| {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct.
        unsafe { libc::getrlimit(r, &mut l) };
        l.rlim_max
    };
    (
        hard(libc::RLIMIT_NOFILE).min(1_048_576),
        hard(libc::RLIMIT_NPROC).min(32_768),
    )
}
