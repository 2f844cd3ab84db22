//! Bad input is refused with a non-zero exit status (by kind: 2 invalid,
//! 3 not found, 4 conflict or in use), a message that names the object and
//! what is wrong, and no change at all: the store (`rete network ls`, `rete
//! ls`), the host's devices, addresses and routes, the nftables table, the
//! pinned namespaces and the journal dir are exactly as before.

mod common;

use common::*;

/// Everything of rete's state a user or the kernel can observe.
#[derive(Debug, PartialEq)]
struct Snapshot {
    networks: serde_json::Value,
    containers: serde_json::Value,
    links: Vec<String>,
    addrs: String,
    routes: String,
    nft: String,
    pinned: Vec<String>,
    journals: Vec<String>,
}

fn list_dir(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn snapshot(lab: &Lab) -> Snapshot {
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&lab.rete_ok(args)).expect("json output")
    };
    Snapshot {
        networks: json(&["network", "ls", "--format", "json"]),
        containers: json(&["ls", "--format", "json"]),
        links: lab.host_links(),
        addrs: lab.sh_host("ip -4 -o addr show"),
        // Without the carrier flag: the kernel raises a new bridge's
        // carrier up to a second after its first port comes up (linkwatch),
        // whatever rete does meanwhile.
        routes: lab
            .sh_host("ip -4 route show table all")
            .replace(" linkdown", ""),
        nft: lab.nft(),
        pinned: list_dir(&lab.netns_dir()),
        journals: list_dir(&lab.dir.join("run").join("journal")),
    }
}

/// Runs rete with `args` and asserts that it exits with `code`, that its
/// error message contains every one of `needles`, and that nothing changed.
fn rejected(lab: &Lab, args: &[&str], code: i32, needles: &[&str]) {
    let before = snapshot(lab);
    let out = lab.rete(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "rete {args:?}: expected exit status {code}; stdout: {} stderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "rete {args:?}: error message should mention {needle:?}, got: {stderr}"
        );
    }
    let after = snapshot(lab);
    assert_eq!(before, after, "rete {args:?} failed but changed state");
}

/// A lab with network "web" (10.70.0.0/24) and container "a" holding
/// 10.70.0.10 and host port 8080.
fn lab_with_web(name: &str) -> Lab {
    let lab = Lab::new(name);
    lab.rete_ok(&["network", "create", "web", "--subnet", "10.70.0.0/24"]);
    lab.rete_ok(&[
        "create",
        "a",
        "--network",
        "web",
        "--ip",
        "10.70.0.10",
        "-p",
        "8080:80",
    ]);
    lab
}

#[test]
fn bad_network_definitions_change_nothing() {
    require_root!();
    let lab = lab_with_web("bad-net");
    let create = |extra: &[&str]| -> Vec<String> {
        ["network", "create", "n1"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let cases: &[(&[&str], i32, &[&str])] = &[
        // Malformed CIDR.
        (
            &["--subnet", "10.80.0.0/33"],
            2,
            &["\"10.80.0.0/33\"", "not a CIDR subnet"],
        ),
        (
            &["--subnet", "banana"],
            2,
            &["\"banana\"", "not a CIDR subnet"],
        ),
        // Host bits, with the fix suggested.
        (
            &["--subnet", "10.80.0.1/24"],
            2,
            &["host bits", "10.80.0.0/24"],
        ),
        // Overlap inside one request, and with an existing network.
        (
            &["--subnet", "10.80.0.0/24", "--subnet", "10.80.0.128/25"],
            2,
            &["10.80.0.0/24", "10.80.0.128/25", "overlap"],
        ),
        (
            &["--subnet", "10.70.0.0/16"],
            4,
            &["10.70.0.0/16", "overlaps 10.70.0.0/24", "\"web\""],
        ),
        // Gateway outside its subnet, or its network address.
        (
            &["--subnet", "10.80.0.0/24", "--gateway", "10.81.0.1"],
            2,
            &["gateway 10.81.0.1", "not inside"],
        ),
        (
            &["--subnet", "10.80.0.0/24", "--gateway", "10.80.0.0"],
            2,
            &["gateway 10.80.0.0", "not a usable address", "10.80.0.0/24"],
        ),
        (&["--gateway", "10.80.0.1"], 2, &["--gateway", "--subnet"]),
        // ip-range outside its subnet, or malformed.
        (
            &["--subnet", "10.80.0.0/24", "--ip-range", "10.81.0.0/28"],
            2,
            &["ip range 10.81.0.0/28", "not inside"],
        ),
        (
            &["--subnet", "10.80.0.0/24", "--ip-range", "10.80.0.300/28"],
            2,
            &["\"10.80.0.300/28\"", "not a CIDR range"],
        ),
        // Interface names the kernel would refuse.
        (
            &[
                "--subnet",
                "10.80.0.0/24",
                "--interface",
                "0123456789abcdef",
            ],
            2,
            &["\"0123456789abcdef\"", "longer than 15 bytes"],
        ),
        (
            &["--subnet", "10.80.0.0/24", "--interface", "br/x"],
            2,
            &["\"br/x\"", "'/'"],
        ),
        (
            &["--subnet", "10.80.0.0/24", "--interface", "br x"],
            2,
            &["\"br x\"", "whitespace"],
        ),
        // Unknown or malformed driver options.
        (
            &["--subnet", "10.80.0.0/24", "-o", "colour=blue"],
            2,
            &["unknown network option \"colour\""],
        ),
        (
            &["--subnet", "10.80.0.0/24", "-o", "isolate=maybe"],
            2,
            &["isolate=maybe", "true or false"],
        ),
        (
            &["--subnet", "10.80.0.0/24", "-o", "isolate"],
            2,
            &["\"isolate\"", "KEY=VALUE"],
        ),
        (
            &["--subnet", "10.80.0.0/24", "-o", "gso_max_size=big"],
            2,
            &["gso_max_size=big", "65536", "524280"],
        ),
        (
            &["--subnet", "10.80.0.0/24", "-o", "gso_max_size=9000"],
            2,
            &["gso_max_size=9000", "65536"],
        ),
        (
            &["--subnet", "10.80.0.0/24", "-o", "gso_max_size=600000"],
            2,
            &["gso_max_size=600000", "524280"],
        ),
        (&["--subnet", "10.80.0.0/24", "--mtu", "20"], 2, &["MTU 20"]),
        // Static routes: the gateway must be on a subnet of the network,
        // of the destination's family, not a reserved address; no host
        // bits, no default route beside the network's own, none twice.
        (
            &[
                "--subnet",
                "10.80.0.0/24",
                "--route",
                "10.9.0.0/16,10.81.0.5",
            ],
            2,
            &["gateway 10.81.0.5", "not on a subnet", "10.80.0.0/24"],
        ),
        (
            &[
                "--subnet",
                "10.80.0.0/24",
                "--route",
                "10.9.0.0/16,10.80.0.0",
            ],
            2,
            &["gateway 10.80.0.0", "network or broadcast"],
        ),
        (
            &[
                "--subnet",
                "10.80.0.0/24",
                "--route",
                "10.9.0.1/16,10.80.0.5",
            ],
            2,
            &["\"10.9.0.1/16\"", "host bits", "10.9.0.0/16"],
        ),
        (
            &[
                "--subnet",
                "10.80.0.0/24",
                "--route",
                "fd00:9::/64,10.80.0.5",
            ],
            2,
            &["different IP families"],
        ),
        (
            &["--subnet", "10.80.0.0/24", "--route", "10.9.0.0/16"],
            2,
            &["DESTINATION/PREFIX,GATEWAY"],
        ),
        (
            &[
                "--subnet",
                "10.80.0.0/24",
                "--route",
                "10.9.0.0/16,10.80.0.5,low",
            ],
            2,
            &["metric \"low\""],
        ),
        (
            &["--subnet", "10.80.0.0/24", "--route", "0.0.0.0/0,10.80.0.5"],
            2,
            &["second default route", "no_default_route=true"],
        ),
        (
            &[
                "--subnet",
                "10.80.0.0/24",
                "--route",
                "10.9.0.0/16,10.80.0.5",
                "--route",
                "10.9.0.0/16,10.80.0.6",
            ],
            2,
            &["route to 10.9.0.0/16 is given twice"],
        ),
        (
            &["--subnet", "10.80.0.0/24", "-o", "metric=first"],
            2,
            &["metric=first"],
        ),
        (
            &["--subnet", "10.80.0.0/24", "-o", "no_default_route=maybe"],
            2,
            &["no_default_route=maybe", "true or false"],
        ),
    ];
    for (extra, code, needles) in cases {
        let args = create(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rejected(&lab, &args, *code, needles);
    }

    // A name that is taken, and names that are not names.
    rejected(
        &lab,
        &["network", "create", "web", "--subnet", "10.80.0.0/24"],
        4,
        &["network \"web\" already exists"],
    );
    rejected(
        &lab,
        &["network", "create", "no/slash", "--subnet", "10.80.0.0/24"],
        2,
        &["invalid network name \"no/slash\""],
    );
    rejected(
        &lab,
        &["network", "create", "host"],
        2,
        &["\"host\"", "reserved"],
    );
    // Unknown networks.
    rejected(
        &lab,
        &["network", "rm", "nope"],
        3,
        &["network \"nope\" not found"],
    );
    rejected(
        &lab,
        &["network", "inspect", "nope"],
        3,
        &["network \"nope\" not found"],
    );

    // The lab still works after all that: a valid network next to web.
    lab.rete_ok(&["network", "create", "n1", "--subnet", "10.80.0.0/24"]);
}

#[test]
fn bad_container_requests_change_nothing() {
    require_root!();
    let lab = lab_with_web("bad-ctr");
    let cases: &[(&[&str], i32, &[&str])] = &[
        // --ip taken, outside the subnet, the gateway, the network or
        // broadcast address.
        (
            &["create", "b", "--network", "web", "--ip", "10.70.0.10"],
            4,
            &["10.70.0.10", "already in use", "\"web\""],
        ),
        (
            &["create", "b", "--network", "web", "--ip", "10.99.0.5"],
            2,
            &["10.99.0.5", "not in any subnet of network \"web\""],
        ),
        (
            &["create", "b", "--network", "web", "--ip", "10.70.0.1"],
            2,
            &["10.70.0.1", "reserved", "gateway"],
        ),
        (
            &["create", "b", "--network", "web", "--ip", "10.70.0.0"],
            2,
            &["10.70.0.0", "reserved", "network"],
        ),
        (
            &["create", "b", "--network", "web", "--ip", "10.70.0.255"],
            2,
            &["10.70.0.255", "reserved", "broadcast"],
        ),
        (
            &["create", "b", "--network", "web", "--ip", "fd00::5"],
            2,
            &["--ip takes an IPv4 address"],
        ),
        (
            &["create", "b", "--network", "web", "--ip", "10.70.0.300"],
            2,
            &["10.70.0.300", "--ip"],
        ),
        // Unknown network, duplicate name, bad names.
        (
            &["create", "b", "--network", "nope"],
            3,
            &["network \"nope\" not found"],
        ),
        (
            &["create", "b", "--network", "web", "--network", "nope"],
            3,
            &["network \"nope\" not found"],
        ),
        (
            &["create", "a", "--network", "web"],
            4,
            &["container \"a\" already exists"],
        ),
        (
            &["create", "_bad", "--network", "web"],
            2,
            &["invalid container name \"_bad\""],
        ),
        (
            &["create", "b/c", "--network", "web"],
            2,
            &["invalid container name \"b/c\""],
        ),
        (
            &["create", "b", "--network", "container:nope"],
            3,
            &["container \"nope\"", "not found"],
        ),
        // Invalid MACs: multicast, short, not hex.
        (
            &[
                "create",
                "b",
                "--network",
                "web",
                "--mac",
                "01:00:5e:00:00:01",
            ],
            2,
            &["invalid MAC address \"01:00:5e:00:00:01\"", "unicast"],
        ),
        (
            &["create", "b", "--network", "web", "--mac", "02:42:ac:11:00"],
            2,
            &["invalid MAC address \"02:42:ac:11:00\""],
        ),
        (
            &[
                "create",
                "b",
                "--network",
                "web",
                "--mac",
                "zz:42:ac:11:00:02",
            ],
            2,
            &["invalid MAC address \"zz:42:ac:11:00:02\""],
        ),
        // Flags that need a bridge network.
        (
            &["create", "b", "--network", "none", "--ip", "10.70.0.20"],
            2,
            &["--ip", "network mode none"],
        ),
        (
            &["create", "b", "--network", "host", "--network", "web"],
            2,
            &["network mode host cannot be combined"],
        ),
    ];
    for (args, code, needles) in cases {
        rejected(&lab, args, *code, needles);
    }
    // Unknown containers.
    rejected(
        &lab,
        &["inspect", "nope"],
        3,
        &["container \"nope\" not found"],
    );
    rejected(
        &lab,
        &["port", "nope"],
        3,
        &["container \"nope\" not found"],
    );
    rejected(
        &lab,
        &["network", "connect", "web", "nope"],
        3,
        &["container \"nope\" not found"],
    );
    rejected(
        &lab,
        &["network", "connect", "web", "a"],
        4,
        &["\"a\" is already connected to network \"web\""],
    );

    // The refused requests leaked no lease: the next container gets the
    // lowest free address.
    lab.rete_ok(&["create", "b", "--network", "web"]);
    assert_eq!(
        lab.addr_of("b", "web", false).to_string(),
        "10.70.0.2",
        "a refused request kept a lease"
    );
}

#[test]
fn bad_port_specs_change_nothing() {
    require_root!();
    let lab = lab_with_web("bad-port");
    // Specs that do not parse: clap rejects them, exit status 2, naming the
    // spec and the reason.
    let specs: &[(&str, &[&str])] = &[
        ("70000", &["port 70000 is outside"]),
        ("8080:", &["a port is missing"]),
        ("1:2:3:4", &["too many ':'"]),
        ("80/icmp", &["unknown protocol \"icmp\""]),
        ("8000-8009:80-85", &["10 ports", "6", "same length"]),
        ("90-80", &["ends before it starts"]),
        ("0", &["port 0 is outside"]),
        ("web:80", &["\"web\" is not a port number"]),
        ("[10.0.0.1]:80:80", &["only IPv6 addresses go in brackets"]),
    ];
    for (spec, needles) in specs {
        let mut all = vec!["invalid port mapping", spec];
        all.extend_from_slice(needles);
        rejected(
            &lab,
            &["create", "b", "--network", "web", "-p", spec],
            2,
            &all,
        );
    }

    // Conflicts: the same host port twice in one request, a port another
    // container holds (on every address, or on one of them), naming it.
    rejected(
        &lab,
        &[
            "create",
            "b",
            "--network",
            "web",
            "-p",
            "9090:80",
            "-p",
            "9090:81",
        ],
        4,
        &["9090/tcp", "published twice"],
    );
    rejected(
        &lab,
        &["create", "b", "--network", "web", "-p", "8080:80"],
        4,
        &["8080/tcp", "already published by container \"a\""],
    );
    rejected(
        &lab,
        &[
            "create",
            "b",
            "--network",
            "web",
            "-p",
            "192.0.2.1:8080:8000",
        ],
        4,
        &["192.0.2.1:8080/tcp", "container \"a\""],
    );
    rejected(
        &lab,
        &["create", "b", "--network", "web", "-p", "8079-8081:80-82"],
        4,
        &["8080/tcp", "container \"a\""],
    );
    // An address the container cannot have.
    rejected(
        &lab,
        &["create", "b", "--network", "web", "-p", "[::1]:8080:80"],
        2,
        &["::1", "no IPv6 address"],
    );
    // -p without a bridge network.
    rejected(
        &lab,
        &["create", "b", "--network", "host", "-p", "8081:80"],
        2,
        &["-p needs a bridge network", "host"],
    );
    rejected(
        &lab,
        &["create", "b", "--network", "none", "-p", "8081:80"],
        2,
        &["-p needs a bridge network", "none"],
    );

    // Same port, other protocol, and another port: both fine.
    lab.rete_ok(&["create", "b", "--network", "web", "-p", "8080:80/udp"]);
    lab.rete_ok(&["create", "c", "--network", "web", "-p", "8081:80"]);
}

#[test]
fn removing_a_network_in_use_names_its_containers_and_force_detaches_them() {
    require_root!();
    let lab = lab_with_web("bad-netrm");
    lab.rete_ok(&["create", "b", "--network", "web"]);
    let veths: Vec<String> = ["a", "b"]
        .iter()
        .map(|c| {
            lab.inspect(c)["endpoints"][0]["host_ifname"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    rejected(
        &lab,
        &["network", "rm", "web"],
        4,
        &[
            "network \"web\" is in use by 2 containers",
            "a, b",
            "--force",
        ],
    );
    // prune leaves a network in use alone.
    let before = snapshot(&lab);
    assert_eq!(lab.rete_ok(&["network", "prune"]), "");
    assert_eq!(before, snapshot(&lab), "prune touched a network in use");

    // --force detaches them: the network and its bridge go, the containers
    // stay, with no endpoint and no veth left on the host.
    lab.rete_ok(&["network", "rm", "--force", "web"]);
    assert_eq!(lab.rete_ok(&["network", "ls", "-q"]), "");
    assert_eq!(lab.rete_ok(&["ls", "-q"]), "a\nb\n");
    for c in ["a", "b"] {
        let v = lab.inspect(c);
        assert_eq!(v["endpoints"], serde_json::json!([]), "{c} still attached");
        assert!(lab.container_ns(c).exists(), "{c} lost its namespace");
    }
    let links = lab.host_links();
    for v in &veths {
        assert!(!links.contains(v), "{v} left behind: {links:?}");
    }
    assert!(
        !links.iter().any(|l| l.starts_with("rete")),
        "rete devices left: {links:?}"
    );
    assert_eq!(lab.nft(), "", "the table goes with the last network");

    // The leases went with the network: a new one of the same subnet hands
    // out a's address again.
    lab.rete_ok(&["network", "create", "web", "--subnet", "10.70.0.0/24"]);
    lab.rete_ok(&["create", "c", "--network", "web", "--ip", "10.70.0.10"]);
}

#[test]
fn a_full_bridge_is_refused_by_name_and_changes_nothing() {
    require_root!();
    let lab = Lab::new("bad-fullbridge");
    lab.rete_ok(&["network", "create", "big", "--subnet", "10.72.0.0/16"]);
    lab.rete_ok(&["create", "a", "--network", "big"]);
    let bridge = lab.bridge_of("big");
    // Fill the bridge to the kernel's limit (1023 ports beside a's) with
    // veth ends of the test's own, in one `ip -batch`.
    let batch = lab.dir.join("fill.batch");
    let lines: String = (0..1022)
        .map(|i| format!("link add f{i} master {bridge} type veth peer name g{i}\n"))
        .collect();
    std::fs::write(&batch, lines).unwrap();
    lab.sh_host(&format!("ip -batch {}", batch.display()));
    rejected(
        &lab,
        &["create", "b", "--network", "big", "-p", "8080:80"],
        5,
        &[
            "network big is full",
            &bridge,
            "1024 ports",
            "another network",
        ],
    );
}
