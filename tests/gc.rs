//! `rete gc` reconciles the kernel with the store: after processes killed
//! with SIGKILL midway through `rete create`, after a container's namespace
//! vanished behind rete's back, after someone flushed the nftables ruleset.
//! And removal and gc are idempotent.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// The published host ports in the table's pub4any map (`tcp . PORT : ...`).
fn nft_published_ports(nft: &str) -> BTreeSet<u16> {
    nft.split("tcp . ")
        .skip(1)
        .filter_map(|rest| {
            let (port, tail) = rest.split_once(' ')?;
            tail.starts_with(':').then(|| port.parse().ok()).flatten()
        })
        .collect()
}

fn containers(lab: &Lab) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&lab.rete_ok(&["ls", "--format", "json"])).unwrap();
    v.as_array().unwrap().clone()
}

fn pinned(lab: &Lab) -> BTreeSet<PathBuf> {
    std::fs::read_dir(lab.netns_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

fn rete_veths(lab: &Lab) -> BTreeSet<String> {
    lab.links_named("rete-").into_iter().collect()
}

/// Asserts that the kernel holds exactly what `rete ls` lists: host veths,
/// pinned namespaces and published ports of listed containers only, and
/// every listed container has its address inside its namespace.
fn assert_no_residue(lab: &Lab) {
    let cs = containers(lab);
    let mut veths = BTreeSet::new();
    let mut namespaces = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for c in &cs {
        let name = c["name"].as_str().unwrap();
        let ns = PathBuf::from(c["netns"].as_str().unwrap());
        namespaces.insert(ns.clone());
        for p in c["ports"].as_array().unwrap() {
            ports.insert(p["host_port"].as_u64().unwrap() as u16);
        }
        let eps = c["endpoints"].as_array().unwrap();
        assert_eq!(eps.len(), 1, "{name}: {c}");
        veths.insert(eps[0]["host_ifname"].as_str().unwrap().to_string());
        let addr = eps[0]["addresses"][0].as_str().unwrap();
        let inside = sh_in(&ns, "ip -4 -o addr show dev eth0");
        assert!(
            inside.contains(&format!(" {addr} ")),
            "{name} lacks its address {addr}: {inside}"
        );
        let up = sh_in(&ns, "ip -o link show dev eth0");
        assert!(up.contains("state UP"), "{name}: eth0 not up: {up}");
    }
    assert_eq!(rete_veths(lab), veths, "host veths vs `rete ls`");
    assert_eq!(pinned(lab), namespaces, "pinned namespaces vs `rete ls`");
    let nft = lab.nft();
    assert_eq!(nft_published_ports(&nft), ports, "published ports: {nft}");
    let journals: Vec<_> = std::fs::read_dir(lab.dir.join("run").join("journal"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(journals.is_empty(), "journals left after gc: {journals:?}");
}

#[test]
fn gc_cleans_up_after_creates_killed_midway() {
    require_root!();
    let lab = Lab::new("gc-kill");
    lab.rete_ok(&["network", "create", "web", "--subnet", "10.70.0.0/24"]);
    // How long one create takes here, so the kills spread over all of it
    // and a little past it: try i dies at a random moment of the i-th of
    // 30 slices of that window.
    let t = Instant::now();
    lab.rete_ok(&["create", "probe", "--network", "web", "-p", "8999:80"]);
    let window = (t.elapsed() * 3 / 2).clamp(Duration::from_millis(8), Duration::from_millis(60));

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut finished = 0;
    for i in 0..30u64 {
        if Instant::now() > deadline {
            break;
        }
        let name = format!("k{i}");
        let port = (9000 + i).to_string();
        let mut child = lab
            .rete_cmd(&[
                "create",
                &name,
                "--network",
                "web",
                "-p",
                &format!("{port}:80"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rete");
        let slice = window.as_micros() as u64 / 30;
        let delay = slice * i + rand::random_range(0..slice.max(1));
        std::thread::sleep(Duration::from_micros(delay));
        let _ = child.kill(); // SIGKILL
        if child.wait().unwrap().success() {
            finished += 1;
        }
    }
    eprintln!("{finished} of 30 creates finished before SIGKILL (window {window:?})");

    let report = lab.rete_ok(&["gc"]);
    eprintln!("gc: {report}");
    assert_no_residue(&lab);

    // Whatever survived is fully usable: its published port answers.
    for c in containers(&lab) {
        let name = c["name"].as_str().unwrap();
        let port = c["ports"][0]["host_port"].as_u64().unwrap() as u16;
        let addr = lab.addr_of(name, "web", false);
        let _srv = Server::tcp(&lab.container_ns(name), addr, 80, name, 1);
        let got = tcp_get(&lab.outside, UPLINK_HOST.parse().unwrap(), port);
        assert!(
            got.as_deref()
                .is_some_and(|g| g.starts_with(&format!("{name} "))),
            "{name}'s port {port}: {got:?}"
        );
    }
    // Killed creates left no name, lease or port claimed: each can be
    // created now with the port it asked for.
    let listed: BTreeSet<String> = containers(&lab)
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    for i in 0..30 {
        let name = format!("k{i}");
        if !listed.contains(&name) {
            lab.rete_ok(&[
                "create",
                &name,
                "--network",
                "web",
                "-p",
                &format!("{}:80", 9000 + i),
            ]);
        }
    }
    assert_no_residue(&lab);
    let addrs: BTreeSet<IpAddr> = containers(&lab)
        .iter()
        .map(|c| {
            let a = c["endpoints"][0]["addresses"][0].as_str().unwrap();
            a.split('/').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(addrs.len(), 31, "addresses: {addrs:?}");

    // Remove everything: nothing of rete is left but the network.
    let names: Vec<String> = listed_names(&lab);
    let mut args = vec!["rm"];
    args.extend(names.iter().map(String::as_str));
    lab.rete_ok(&args);
    assert!(rete_veths(&lab).is_empty(), "{:?}", lab.host_links());
    assert!(pinned(&lab).is_empty(), "{:?}", pinned(&lab));
    assert!(nft_published_ports(&lab.nft()).is_empty(), "{}", lab.nft());
}

fn listed_names(lab: &Lab) -> Vec<String> {
    lab.rete_ok(&["ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn gc_releases_a_container_whose_namespace_vanished() {
    require_root!();
    let lab = Lab::new("gc-ns");
    lab.rete_ok(&["network", "create", "web", "--subnet", "10.70.0.0/24"]);
    lab.rete_ok(&[
        "create",
        "gone",
        "--network",
        "web",
        "--ip",
        "10.70.0.50",
        "-p",
        "8080:80",
    ]);
    lab.rete_ok(&["create", "stays", "--network", "web", "-p", "8081:80"]);
    let veth = lab.inspect("gone")["endpoints"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();

    // Someone else deletes the namespace (as `ip netns delete` would).
    rete::netns::remove(&lab.container_ns("gone")).unwrap();
    let report = lab.rete_ok(&["gc"]);
    assert!(report.contains("removed container gone"), "{report}");
    assert_eq!(listed_names(&lab), ["stays"]);
    // The veth dies with its peer's namespace; the kernel frees namespaces
    // asynchronously, so allow it a moment.
    let until = Instant::now() + Duration::from_secs(5);
    while lab.host_links().contains(&veth) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!lab.host_links().contains(&veth), "{veth} left behind");
    assert!(
        !nft_published_ports(&lab.nft()).contains(&8080),
        "{}",
        lab.nft()
    );

    // Its lease and port are free: another container takes both, and the
    // port leads to it.
    lab.rete_ok(&[
        "create",
        "new",
        "--network",
        "web",
        "--ip",
        "10.70.0.50",
        "-p",
        "8080:80",
    ]);
    let addr: IpAddr = "10.70.0.50".parse().unwrap();
    let _srv = Server::tcp(&lab.container_ns("new"), addr, 80, "new", 1);
    let got = tcp_get(&lab.outside, UPLINK_HOST.parse().unwrap(), 8080);
    assert!(
        got.as_deref().is_some_and(|g| g.starts_with("new ")),
        "{got:?}"
    );
    // The other container was not touched.
    assert_no_residue(&lab);
}

/// A runtime's namespace (`--netns PATH`) whose pin lost its mount, leaving
/// the plain file behind, is gone too: gc releases the container.
#[test]
fn gc_releases_a_runtime_namespace_whose_pin_lost_its_mount() {
    require_root!();
    let lab = Lab::new("gc-pin");
    lab.rete_ok(&["network", "create", "web", "--subnet", "10.71.0.0/24"]);
    let pin = lab.dir.join("runtime-ns");
    rete::netns::create(&pin).unwrap();
    lab.rete_ok(&[
        "create",
        "runtime",
        "--network",
        "web",
        "--netns",
        pin.to_str().unwrap(),
    ]);
    let c = std::ffi::CString::new(pin.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; MNT_DETACH cannot block.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) }, 0);
    assert!(pin.exists(), "the plain file stays");
    let report = lab.rete_ok(&["gc"]);
    assert!(report.contains("removed container runtime"), "{report}");
    assert!(listed_names(&lab).is_empty());
    let _ = std::fs::remove_file(&pin);
    assert_no_residue(&lab);
}

#[test]
fn gc_and_firewall_reload_restore_a_flushed_table() {
    require_root!();
    let lab = Lab::new("gc-flush");
    // Off the shortcut, which would carry the published port past a
    // flushed firewall (tests/fastpath.rs).
    lab.rete_ok(&[
        "network",
        "create",
        "web",
        "--subnet",
        "10.70.0.0/24",
        "--opt",
        "fastpath=false",
    ]);
    lab.rete_ok(&["create", "a", "--network", "web", "-p", "8080:80"]);
    let addr = lab.addr_of("a", "web", false);
    let uplink: IpAddr = UPLINK_HOST.parse().unwrap();
    let _srv = Server::tcp(&lab.container_ns("a"), addr, 80, "hello", 3);
    assert!(tcp_get(&lab.outside, uplink, 8080).is_some_and(|g| g.starts_with("hello ")));
    let table = lab.nft();
    assert!(!table.is_empty());

    // Flushed ruleset: the port is dead until gc rebuilds the table.
    lab.sh_host("nft flush ruleset");
    assert_eq!(lab.nft(), "");
    assert_eq!(tcp_get(&lab.outside, uplink, 8080), None);
    lab.rete_ok(&["gc"]);
    assert_eq!(sorted_lines(&lab.nft()), sorted_lines(&table));
    let got = tcp_get(&lab.outside, uplink, 8080);
    assert!(
        got.as_deref().is_some_and(|g| g.starts_with("hello ")),
        "after gc: {got:?}"
    );

    // Deleted table: firewall-reload rebuilds it.
    lab.sh_host("nft delete table inet rete");
    assert_eq!(lab.nft(), "");
    lab.rete_ok(&["firewall-reload"]);
    assert_eq!(sorted_lines(&lab.nft()), sorted_lines(&table));
    let got = tcp_get(&lab.outside, uplink, 8080);
    assert!(
        got.as_deref().is_some_and(|g| g.starts_with("hello ")),
        "after reload: {got:?}"
    );
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(|l| l.trim().to_string()).collect();
    v.sort();
    v
}

#[test]
fn rm_and_gc_are_idempotent() {
    require_root!();
    let lab = Lab::new("gc-idem");
    // Removing what does not exist succeeds.
    lab.rete_ok(&["rm", "nothing"]);
    lab.rete_ok(&["gc"]);
    lab.rete_ok(&["network", "create", "web", "--subnet", "10.70.0.0/24"]);
    lab.rete_ok(&["create", "a", "--network", "web", "-p", "8080:80"]);
    lab.rete_ok(&["create", "b", "--network", "web"]);
    lab.rete_ok(&["rm", "b"]);
    lab.rete_ok(&["rm", "b"]);
    lab.rete_ok(&["rm", "b", "nothing"]);

    // gc with nothing to mend reports nothing and changes nothing, however
    // often it runs.
    let before = (
        lab.rete_ok(&["ls", "--format", "json"]),
        lab.rete_ok(&["network", "ls", "--format", "json"]),
        lab.host_links(),
        sorted_lines(&lab.nft()),
        pinned(&lab),
    );
    for _ in 0..3 {
        assert_eq!(lab.rete_ok(&["gc"]), "");
        let after = (
            lab.rete_ok(&["ls", "--format", "json"]),
            lab.rete_ok(&["network", "ls", "--format", "json"]),
            lab.host_links(),
            sorted_lines(&lab.nft()),
            pinned(&lab),
        );
        assert_eq!(before, after);
    }
    assert_no_residue(&lab);
    let addr = lab.addr_of("a", "web", false);
    let _srv = Server::tcp(&lab.container_ns("a"), addr, 80, "still", 1);
    let got = tcp_get(&lab.outside, UPLINK_HOST.parse().unwrap(), 8080);
    assert!(
        got.as_deref().is_some_and(|g| g.starts_with("still ")),
        "{got:?}"
    );
}

#[test]
fn gc_cleans_up_after_removes_killed_midway() {
    require_root!();
    let lab = Lab::new("gc-kill-rm");
    lab.rete_ok(&["network", "create", "web", "--subnet", "10.70.0.0/24"]);
    for i in 0..20 {
        let port = format!("{}:80", 9000 + i);
        lab.rete_ok(&["create", &format!("r{i}"), "--network", "web", "-p", &port]);
    }
    // As above: removal i of 19 dies in the i-th slice of a window a little
    // longer than one removal takes.
    let t = Instant::now();
    lab.rete_ok(&["rm", "r0"]);
    let window = (t.elapsed() * 3 / 2).clamp(Duration::from_millis(8), Duration::from_millis(60));
    let slice = window.as_micros() as u64 / 19;
    let mut finished = 0;
    for i in 1..20u64 {
        let mut child = lab
            .rete_cmd(&["rm", &format!("r{i}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rete");
        let delay = slice * (i - 1) + rand::random_range(0..slice.max(1));
        std::thread::sleep(Duration::from_micros(delay));
        let _ = child.kill(); // SIGKILL
        if child.wait().unwrap().success() {
            finished += 1;
        }
    }
    eprintln!("{finished} of 19 removes finished before SIGKILL (window {window:?})");
    let report = lab.rete_ok(&["gc"]);
    eprintln!("gc: {report}");
    // Every container still listed is whole (veth, address, port), and
    // nothing unlisted is left.
    assert_no_residue(&lab);
    for name in listed_names(&lab) {
        let c = lab.inspect(&name);
        let port = c["ports"][0]["host_port"].as_u64().unwrap() as u16;
        let addr = lab.addr_of(&name, "web", false);
        let _srv = Server::tcp(&lab.container_ns(&name), addr, 80, &name, 1);
        let got = tcp_get(&lab.outside, UPLINK_HOST.parse().unwrap(), port);
        assert!(
            got.as_deref()
                .is_some_and(|g| g.starts_with(&format!("{name} "))),
            "{name}'s port {port}: {got:?}"
        );
    }
    // Removing again finishes the job; then every name, address and port is
    // free for new containers.
    let names = listed_names(&lab);
    if !names.is_empty() {
        let mut args = vec!["rm"];
        args.extend(names.iter().map(String::as_str));
        lab.rete_ok(&args);
    }
    assert!(rete_veths(&lab).is_empty(), "{:?}", lab.host_links());
    assert!(pinned(&lab).is_empty(), "{:?}", pinned(&lab));
    for i in 0..20 {
        let port = format!("{}:80", 9000 + i);
        let ip = format!("10.70.0.{}", 2 + i);
        lab.rete_ok(&[
            "create",
            &format!("r{i}"),
            "--network",
            "web",
            "--ip",
            &ip,
            "-p",
            &port,
        ]);
    }
    assert_no_residue(&lab);
}

#[test]
fn gc_replumbs_a_container_whose_veth_was_deleted() {
    require_root!();
    let lab = Lab::new("gc-veth");
    lab.rete_ok(&["network", "create", "web", "--subnet", "10.70.0.0/24"]);
    lab.rete_ok(&["create", "hurt", "--network", "web", "-p", "8080:80"]);
    let c = lab.inspect("hurt");
    let veth = c["endpoints"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    let mac = c["endpoints"][0]["mac"].as_str().unwrap().to_string();

    // Someone deletes the host end by hand: the pair goes, the namespace stays.
    lab.sh_host(&format!("ip link del {veth}"));
    let addr: IpAddr = "10.70.0.2".parse().unwrap();
    assert!(
        !ping_once(&lab.host, addr),
        "the container should be cut off"
    );

    let report = lab.rete_ok(&["gc"]);
    assert!(
        report.contains("replumbed lost devices of container hurt"),
        "{report}"
    );
    assert_no_residue(&lab);
    let c = lab.inspect("hurt");
    assert_eq!(
        c["endpoints"][0]["mac"],
        mac.as_str(),
        "same MAC after repair"
    );
    let routes = sh_in(&lab.container_ns("hurt"), "ip route show default");
    assert!(routes.contains("via 10.70.0.1"), "{routes}");
    let _srv = Server::tcp(&lab.container_ns("hurt"), addr, 80, "back", 1);
    let got = tcp_get(&lab.outside, UPLINK_HOST.parse().unwrap(), 8080);
    assert!(
        got.as_deref().is_some_and(|g| g.starts_with("back ")),
        "{got:?}"
    );
    // A second gc has nothing to do.
    assert_eq!(lab.rete_ok(&["gc"]), "");
}

/// `rete rm` deletes a container's veth pairs from inside its namespace,
/// also while something outside rete still holds that namespace: on return
/// neither end is left, the old namespace reaches nothing and the address
/// can go to a new container. Where the container end is not what rete made
/// (renamed inside), the host end is taken off the bridge and down at once,
/// carrying nothing, and `rete gc` deletes it once the kernel could not.
/// With nothing holding the namespace, gc has nothing to do and nothing is
/// left.
#[test]
fn rm_deletes_the_pair_of_a_namespace_something_else_still_holds() {
    require_root!();
    let lab = Lab::new("gc-held");
    lab.rete_ok(&["network", "create", "web", "--subnet", "10.71.0.0/24"]);
    let veth_of = |name: &str| {
        lab.inspect(name)["endpoints"][0]["host_ifname"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let gateway: IpAddr = "10.71.0.1".parse().unwrap();
    // A reference rete does not know about, as an `ip netns exec` shell
    // left running would hold.
    let hold = |name: &str| {
        let held = std::fs::File::open(lab.container_ns(name)).unwrap();
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            std::os::fd::AsRawFd::as_raw_fd(&held)
        ));
        (held, path)
    };

    lab.rete_ok(&["create", "old", "--network", "web", "--ip", "10.71.0.9"]);
    let veth = veth_of("old");
    assert!(ping(&lab.container_ns("old"), gateway));
    let (held, held_path) = hold("old");
    lab.rete_ok(&["rm", "old"]);
    assert!(!lab.host_links().contains(&veth), "{veth} left behind");
    let inside = sh_in(&held_path, "ip -o link show");
    assert!(
        !inside.contains("eth0"),
        "the old namespace kept eth0: {inside}"
    );
    assert!(
        !ping_once(&held_path, gateway),
        "the old namespace still reaches the bridge"
    );
    lab.rete_ok(&["create", "new", "--network", "web", "--ip", "10.71.0.9"]);
    assert!(ping(&lab.container_ns("new"), gateway));
    let report = lab.rete_ok(&["gc"]);
    assert!(!report.contains(&veth), "{report}");
    drop(held);

    // The container end renamed inside: rete cannot tell it is its own.
    let veth = veth_of("new");
    let (held, held_path) = hold("new");
    sh_in(
        &held_path,
        "ip link set eth0 down && ip link set eth0 name other",
    );
    lab.rete_ok(&["rm", "new"]);
    let line = lab.sh_host(&format!("ip -o link show {veth}"));
    assert!(
        !line.contains(" master ") && line.contains("state DOWN"),
        "the host end of a removed container still carries traffic: {line}"
    );
    lab.rete_ok(&["create", "newer", "--network", "web", "--ip", "10.71.0.9"]);
    assert!(ping(&lab.container_ns("newer"), gateway));
    let report = lab.rete_ok(&["gc"]);
    assert!(report.contains(&veth), "gc should delete {veth}: {report}");
    assert!(!lab.host_links().contains(&veth), "{veth} left behind");
    drop(held);

    // Nothing holds it: nothing for gc, nothing left.
    let veth = veth_of("newer");
    lab.rete_ok(&["rm", "newer"]);
    let report = lab.rete_ok(&["gc"]);
    assert!(!report.contains(&veth), "{report}");
    assert!(!lab.host_links().contains(&veth), "{veth} left behind");
    assert_no_residue(&lab);
}

/// After a reboot the store is still there and the kernel's state is not.
/// `rete create` mends it as `rete gc` would (the bridge rebuilt, the
/// containers whose namespaces went released) and succeeds; a name that is
/// simply unknown is still refused as before.
#[test]
fn create_after_a_reboot_rebuilds_the_bridge() {
    require_root!();
    let lab = Lab::new("gc-reboot");
    lab.rete_ok(&["network", "create", "web", "--subnet", "10.72.0.0/24"]);
    lab.rete_ok(&["create", "old", "--network", "web", "-p", "8080:80"]);
    let bridge = lab.bridge_of("web");

    rete::netns::remove(&lab.container_ns("old")).unwrap();
    lab.sh_host(&format!("ip link del {bridge}"));

    let err = lab.rete_err(&["create", "x", "--network", "nosuch"]);
    assert!(err.contains("nosuch"), "{err}");
    // new asks for old's address: refused unless old's lease was released.
    let old_ip = "10.72.0.2";
    lab.rete_ok(&[
        "create",
        "new",
        "--network",
        "web",
        "--ip",
        old_ip,
        "-p",
        "8080:80",
    ]);
    assert_eq!(listed_names(&lab), ["new"]);
    assert!(lab.host_links().contains(&bridge));
    let addr = lab.addr_of("new", "web", false);
    assert_eq!(addr.to_string(), old_ip, "old's lease was released");
    let _srv = Server::tcp(&lab.container_ns("new"), addr, 80, "new", 1);
    let got = tcp_get(&lab.outside, UPLINK_HOST.parse().unwrap(), 8080);
    assert!(
        got.as_deref().is_some_and(|g| g.starts_with("new ")),
        "{got:?}"
    );
    drop(_srv);
    lab.rete_ok(&["rm", "new"]);
    assert_no_residue(&lab);
}

/// A container whose devices and namespace vanished before gc saw them
/// leaves its address in the network's fast path map (its host end is gone,
/// so nothing tells which bridge it was on): gc takes every address no
/// endpoint holds off the map, reports it, and keeps the live ones.
#[test]
fn gc_takes_stale_addresses_off_the_fast_path() {
    require_root!();
    let lab = Lab::new("gc-fastpath");
    lab.rete_ok(&["network", "create", "web", "--subnet", "10.70.0.0/24"]);
    lab.rete_ok(&["create", "gone", "--network", "web", "--ip", "10.70.0.77"]);
    lab.rete_ok(&["create", "stays", "--network", "web", "--ip", "10.70.0.78"]);
    let bridge = lab.sh_host("ip -j link show type bridge");
    let bridge: serde_json::Value = serde_json::from_str(&bridge).unwrap();
    let bridge = bridge[0]["ifname"].as_str().unwrap().to_string();
    let entries = || {
        let bridge = bridge.clone();
        let mut v = in_ns(&lab.host, move || {
            let mut host = rete::netlink::Rtnl::open().unwrap();
            let index = host.link(&bridge).unwrap().unwrap().index;
            rete::fastpath::entries(&mut host, index).unwrap()
        });
        v.sort();
        v
    };
    let gone: std::net::Ipv4Addr = "10.70.0.77".parse().unwrap();
    let stays: std::net::Ipv4Addr = "10.70.0.78".parse().unwrap();
    assert_eq!(entries(), [gone, stays]);

    // Its host end and its namespace go behind rete's back.
    let veth = lab.inspect("gone")["endpoints"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    lab.sh_host(&format!("ip link del {veth}"));
    rete::netns::remove(&lab.container_ns("gone")).unwrap();
    let report = lab.rete_ok(&["gc"]);
    assert!(report.contains("removed container gone"), "{report}");
    assert!(
        report.contains("took web 10.70.0.77 off the fast path"),
        "{report}"
    );
    assert_eq!(entries(), [stays]);
    let again = lab.rete_ok(&["gc"]);
    assert!(!again.contains("fast path"), "{again}");
    lab.rete_ok(&["rm", "stays"]);
    assert_eq!(entries(), Vec::<std::net::Ipv4Addr>::new());
}
