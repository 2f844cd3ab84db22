//! rete as a CNI plugin, driven the way a container runtime drives it (see
//! `cni_runner`): every operation and result version, real connectivity
//! (ping between attached containers, published ports from the outside),
//! CNI_ARGS and capabilities, DEL idempotence and release, GC, STATUS, and
//! the CLI's view of what CNI made.

mod cni_runner;
mod common;

use std::net::IpAddr;
use std::path::Path;

use cni_runner::*;
use common::*;
use serde_json::{json, Value};

/// A one-plugin list of type `rete` with every capability rete has.
fn rete_list(name: &str, version: &str, subnet: &str) -> NetList {
    NetList::from_value(json!({
        "cniVersion": version,
        "name": name,
        "plugins": [{
            "type": "rete",
            "capabilities": {
                "portMappings": true, "ips": true, "mac": true, "dns": true, "ipRanges": true
            },
            "ipam": { "type": "rete", "ranges": [[{ "subnet": subnet }]] },
            "dns": { "nameservers": ["192.0.2.53"] }
        }]
    }))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn json_of(lab: &Lab, args: &[&str]) -> Value {
    serde_json::from_str(&lab.rete_ok(args)).expect("rete prints JSON")
}

/// The names `rete ls` lists.
fn containers(lab: &Lab) -> Vec<String> {
    let mut v: Vec<String> = lab
        .rete_ok(&["ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The addresses of `ifname` inside `netns`, as `ip -o addr` prints them.
fn addrs_in(netns: &Path, ifname: &str) -> String {
    sh_in_allow_fail(netns, &format!("ip -o addr show dev {ifname} 2>/dev/null"))
}

fn ok<T>(r: Result<T, Failure>) -> T {
    r.unwrap_or_else(|f| panic!("{f}"))
}

#[test]
fn version_reports_every_supported_version() {
    require_root!();
    let lab = Lab::new("cni-version");
    let runner = Runner::install(&lab);
    for kind in ["rete", "rete-ipam"] {
        for v in VERSIONS {
            let got = ok(runner.version(kind, v));
            assert_eq!(got["cniVersion"], json!(v), "{kind}: {got}");
            let supported: Vec<&str> = got["supportedVersions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            for want in VERSIONS {
                assert!(supported.contains(&want), "{kind} lacks {want}: {got}");
            }
        }
    }
}

/// ADD, CHECK, STATUS, GC and DEL with each result version, on its own
/// network: the result's shape, the address inside the namespace, the
/// CLI's view, and DEL twice.
#[test]
fn every_operation_with_every_version() {
    require_root!();
    let lab = Lab::new("cni-versions");
    let runner = Runner::install(&lab);
    for (i, v) in VERSIONS.iter().enumerate() {
        let name = format!("cni{}", v.replace('.', ""));
        let subnet = format!("10.88.{i}.0/24");
        let list = rete_list(&name, v, &subnet);
        let id = format!("ctr-{i}");
        let ns = container_ns(&lab, &id);
        let rt = RuntimeConf::new(&id, &ns);

        ok(runner.status(&list));
        let result = ok(runner.add(&list, &rt));
        assert_result_shape(&result, v, &ns, "eth0");
        let addr = ip4_of(&result);
        assert_eq!(addr, ip(&format!("10.88.{i}.2")), "{result}");
        assert_eq!(result["ips"][0]["gateway"], json!(format!("10.88.{i}.1")));
        assert_eq!(result["dns"]["nameservers"], json!(["192.0.2.53"]));
        let inside = addrs_in(&ns, "eth0");
        assert!(inside.contains(&format!(" {addr}/24 ")), "{v}: {inside}");
        let routes = sh_in(&ns, "ip -4 route show default");
        assert!(
            routes.contains(&format!("via 10.88.{i}.1")),
            "{v}: {routes}"
        );

        // The CLI sees a rete container named by the container ID and a
        // rete network named by the configuration, labelled as CNI's.
        let cs = json_of(&lab, &["ls", "--format", "json"]);
        let c = cs
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == json!(id))
            .unwrap_or_else(|| panic!("rete ls lacks {id}: {cs}"));
        assert_eq!(c["labels"]["io.rete.frontend"], "cni", "{c}");
        assert_eq!(c["endpoints"][0]["network"], json!(name), "{c}");
        let nets = json_of(&lab, &["network", "ls", "--format", "json"]);
        assert!(
            nets.as_array()
                .unwrap()
                .iter()
                .any(|n| n["name"] == json!(name)),
            "rete network ls lacks {name}: {nets}"
        );

        if version_ge(v, "0.4.0") {
            ok(runner.check(&list, &rt));
        }
        if version_ge(v, "1.1.0") {
            ok(runner.status(&list));
            // GC keeping this attachment changes nothing.
            ok(runner.gc(&list, &[&rt]));
            assert!(containers(&lab).contains(&id));
            ok(runner.check(&list, &rt));
        } else {
            // STATUS and GC are 1.1.0 commands: earlier versions are refused
            // as incompatible.
            for cmd in ["STATUS", "GC"] {
                let e = runner
                    .exec("rete", cmd, &list.plugin_conf(0, None, None), None)
                    .outcome()
                    .expect_err("STATUS/GC before 1.1.0");
                assert_eq!(e.code, Some(1), "{cmd} with {v}: {e}");
            }
        }

        ok(runner.del(&list, &rt));
        assert!(!containers(&lab).contains(&id), "{v}: DEL left {id}");
        assert_eq!(addrs_in(&ns, "eth0"), "", "{v}: eth0 is gone");
        assert!(runner.cached(&list, &rt).is_none());
        // DEL again, with and without a prevResult: still success.
        ok(runner.del(&list, &rt));
        let mut conf = list.plugin_conf(0, Some(&rt), None);
        if version_ge(v, "0.4.0") {
            conf["prevResult"] = result.clone();
        }
        ok(runner.exec("rete", "DEL", &conf, Some(&rt)).outcome());
    }
    assert_eq!(containers(&lab), Vec::<String>::new());
    assert_eq!(lab.links_named("rete-"), Vec::<String>::new());
}

/// Two containers on one network reach each other; ports published through
/// runtimeConfig.portMappings answer from the outside, on every host
/// address (hostIP empty) and on one (hostIP set).
#[test]
fn attached_containers_talk_and_published_ports_answer() {
    require_root!();
    let lab = Lab::new("cni-traffic");
    let runner = Runner::install(&lab);
    let list = rete_list("cnitraffic", "1.1.0", "10.89.0.0/24");
    let ns_a = container_ns(&lab, "a");
    let ns_b = container_ns(&lab, "b");
    let rt_a = RuntimeConf::new("a", &ns_a).cap(
        "portMappings",
        json!([{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "" }]),
    );
    let rt_b = RuntimeConf::new("b", &ns_b).cap(
        "portMappings",
        json!([{ "hostPort": 8081, "containerPort": 80, "protocol": "tcp", "hostIP": UPLINK_HOST }]),
    );
    let a = ip4_of(&ok(runner.add(&list, &rt_a)));
    let b = ip4_of(&ok(runner.add(&list, &rt_b)));
    assert_ne!(a, b);
    assert!(ping(&ns_a, b), "a cannot ping b ({b})");
    assert!(ping(&ns_b, a), "b cannot ping a ({a})");

    for (ns, addr, port, tag) in [(&ns_a, a, 8080, "web-a"), (&ns_b, b, 8081, "web-b")] {
        let _srv = Server::tcp(ns, addr, 80, tag, 1);
        let got = tcp_get(&lab.outside, ip(UPLINK_HOST), port);
        assert_eq!(
            got.as_deref(),
            Some(format!("{tag} {UPLINK_OUTSIDE}").as_str()),
            "port {port} from the outside"
        );
    }
    let ports = json_of(&lab, &["port", "b", "--format", "json"]);
    assert!(ports.to_string().contains(UPLINK_HOST), "{ports}");

    ok(runner.del(&list, &rt_a));
    ok(runner.del(&list, &rt_b));
    assert_eq!(lab.published_elements(), "");
    let _srv = Server::tcp(&ns_a, ip("0.0.0.0"), 80, "late", 1);
    assert_eq!(tcp_get(&lab.outside, ip(UPLINK_HOST), 8080), None);
}

/// CNI_ARGS IP= and MAC= and the ips and mac capabilities pick the address
/// and MAC; capability arguments reach only plugins that declare them.
#[test]
fn cni_args_and_capabilities_are_honoured() {
    require_root!();
    let lab = Lab::new("cni-args");
    let runner = Runner::install(&lab);
    let list = rete_list("cniargs", "1.0.0", "10.90.0.0/24");

    // Not /sys/class/net: sysfs shows the namespace it was mounted in.
    let mac_of = |ns: &Path| {
        let link = sh_in(ns, "ip -o link show dev eth0");
        let after = link.split("link/ether ").nth(1).unwrap_or_default();
        after
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };

    let ns1 = container_ns(&lab, "c1");
    let rt1 = RuntimeConf::new("c1", &ns1)
        .arg("IgnoreUnknown", "1")
        .arg("K8S_POD_NAME", "web")
        .arg("IP", "10.90.0.50")
        .arg("MAC", "02:00:00:00:00:50");
    let r1 = ok(runner.add(&list, &rt1));
    assert_eq!(r1["ips"][0]["address"], "10.90.0.50/24", "{r1}");
    assert_eq!(r1["interfaces"][2]["mac"], "02:00:00:00:00:50", "{r1}");
    assert_eq!(mac_of(&ns1), "02:00:00:00:00:50");
    assert!(addrs_in(&ns1, "eth0").contains(" 10.90.0.50/24 "));

    let ns2 = container_ns(&lab, "c2");
    let rt2 = RuntimeConf::new("c2", &ns2)
        .cap("ips", json!(["10.90.0.60/24"]))
        .cap("mac", json!("02:00:00:00:00:60"));
    let conf = list.plugin_conf(0, Some(&rt2), None);
    assert_eq!(conf["runtimeConfig"]["ips"], json!(["10.90.0.60/24"]));
    let r2 = ok(runner.add(&list, &rt2));
    assert_eq!(r2["ips"][0]["address"], "10.90.0.60/24", "{r2}");
    assert_eq!(mac_of(&ns2), "02:00:00:00:00:60");
    assert!(ping(&ns1, ip("10.90.0.60")));

    // The same network configured without those capabilities: the runtime
    // does not pass the arguments, and rete allocates as usual.
    let mut plain = list.clone();
    plain.plugins[0]
        .as_object_mut()
        .unwrap()
        .remove("capabilities");
    let ns3 = container_ns(&lab, "c3");
    let rt3 = RuntimeConf::new("c3", &ns3)
        .cap("ips", json!(["10.90.0.70/24"]))
        .cap("mac", json!("02:00:00:00:00:70"));
    assert!(plain.plugin_conf(0, Some(&rt3), None)["runtimeConfig"].is_null());
    let r3 = ok(runner.add(&plain, &rt3));
    assert_eq!(r3["ips"][0]["address"], "10.90.0.2/24", "{r3}");
    assert_ne!(mac_of(&ns3), "02:00:00:00:00:70");

    // An address someone holds is refused, and nothing is attached.
    let ns4 = container_ns(&lab, "c4");
    let rt4 = RuntimeConf::new("c4", &ns4).arg("IP", "10.90.0.50");
    let e = runner.add(&list, &rt4).expect_err("address in use");
    assert!(e.code.is_some(), "{e}");
    assert!(e.msg.contains("10.90.0.50"), "{e}");
    assert!(!containers(&lab).contains(&"c4".to_string()));
    assert_eq!(addrs_in(&ns4, "eth0"), "");

    for rt in [&rt1, &rt2, &rt3] {
        ok(runner.del(&list, rt));
    }
    assert_eq!(containers(&lab), Vec::<String>::new());
}

/// DEL succeeds after the namespace is gone, and again; it releases the
/// lease (the next ADD gets that address) and the host port (another
/// container can publish it, and it answers there).
#[test]
fn del_is_idempotent_and_releases_after_the_namespace_is_gone() {
    require_root!();
    let lab = Lab::new("cni-del");
    let runner = Runner::install(&lab);
    let list = rete_list("cnidel", "1.1.0", "10.91.0.0/24");
    let port = |p: u16| json!([{ "hostPort": p, "containerPort": 80, "protocol": "tcp" }]);

    let ns0 = container_ns(&lab, "c0");
    let rt0 = RuntimeConf::new("c0", &ns0);
    assert_eq!(ip4_of(&ok(runner.add(&list, &rt0))), ip("10.91.0.2"));
    let ns1 = container_ns(&lab, "c1");
    let rt1 = RuntimeConf::new("c1", &ns1).cap("portMappings", port(8090));
    assert_eq!(ip4_of(&ok(runner.add(&list, &rt1))), ip("10.91.0.3"));
    assert_ne!(lab.published_elements(), "");

    // The runtime tore the namespace down before DEL.
    rete::netns::remove(&ns1).unwrap();
    ok(runner.del(&list, &rt1));
    ok(runner.del(&list, &rt1));
    assert_eq!(containers(&lab), vec!["c0".to_string()]);
    assert_eq!(lab.links_named("rete-").len(), 1, "{:?}", lab.host_links());
    assert_eq!(lab.published_elements(), "", "the port is unpublished");

    // The lease and the port are free again: another container may ask
    // for both (allocation itself moves on to the next address).
    let ns2 = container_ns(&lab, "c2");
    let rt2 = RuntimeConf::new("c2", &ns2)
        .cap("portMappings", port(8090))
        .arg("IP", "10.91.0.3");
    let c2 = ip4_of(&ok(runner.add(&list, &rt2)));
    assert_eq!(c2, ip("10.91.0.3"), "the released address is free");
    let _srv = Server::tcp(&ns2, c2, 80, "c2", 1);
    assert_eq!(
        tcp_get(&lab.outside, ip(UPLINK_HOST), 8090).as_deref(),
        Some(format!("c2 {UPLINK_OUTSIDE}").as_str())
    );

    ok(runner.del(&list, &rt2));
    ok(runner.del(&list, &rt0));
    assert_eq!(containers(&lab), Vec::<String>::new());
    assert_eq!(lab.links_named("rete-"), Vec::<String>::new());
}

/// GC removes the attachments not listed as valid, and only those.
#[test]
fn gc_removes_attachments_not_listed() {
    require_root!();
    let lab = Lab::new("cni-gc");
    let runner = Runner::install(&lab);
    let list = rete_list("cnigc", "1.1.0", "10.92.0.0/24");
    let port = |p: u16| json!([{ "hostPort": p, "containerPort": 80 }]);
    let rts: Vec<RuntimeConf> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            RuntimeConf::new(n, &container_ns(&lab, n)).cap("portMappings", port(8100 + i as u16))
        })
        .collect();
    for rt in &rts {
        ok(runner.add(&list, rt));
    }
    // A container of the CLI on the same network is not CNI's to collect.
    lab.rete_ok(&["create", "cli", "--network", "cnigc"]);
    assert_eq!(containers(&lab), ["a", "b", "c", "cli"]);

    ok(runner.gc(&list, &[&rts[0]]));
    assert_eq!(containers(&lab), ["a", "cli"]);
    assert_eq!(lab.links_named("rete-").len(), 2, "{:?}", lab.host_links());
    for rt in &rts[1..] {
        assert_eq!(
            addrs_in(&rt.netns, "eth0"),
            "",
            "{} keeps eth0",
            rt.container_id
        );
    }
    ok(runner.check(&list, &rts[0]));
    let published = lab.published_elements();
    assert!(published.contains("8100"), "{published}");
    assert!(
        !published.contains("8101") && !published.contains("8102"),
        "{published}"
    );

    ok(runner.gc(&list, &[]));
    assert_eq!(containers(&lab), ["cli"]);
    assert_eq!(lab.published_elements(), "");
    // What GC removed was released: a's and b's addresses may be asked for.
    for (name, addr) in [("d", "10.92.0.2"), ("e", "10.92.0.3")] {
        let rt = RuntimeConf::new(name, &container_ns(&lab, name)).arg("IP", addr);
        assert_eq!(ip4_of(&ok(runner.add(&list, &rt))), ip(addr));
    }
}

/// STATUS fails with 50 while the range has no free address.
#[test]
fn status_reports_an_exhausted_range() {
    require_root!();
    let lab = Lab::new("cni-status");
    let runner = Runner::install(&lab);
    // A /30: the gateway .1 and one address, .2.
    let list = rete_list("cnifull", "1.1.0", "10.93.0.0/30");
    ok(runner.status(&list));
    let rt_a = RuntimeConf::new("a", &container_ns(&lab, "a"));
    assert_eq!(ip4_of(&ok(runner.add(&list, &rt_a))), ip("10.93.0.2"));

    let e = runner.status(&list).expect_err("no room left");
    assert_eq!(e.code, Some(50), "{e}");
    assert_ne!(e.exec.exit, Some(0));

    let rt_b = RuntimeConf::new("b", &container_ns(&lab, "b"));
    let e = runner.add(&list, &rt_b).expect_err("range exhausted");
    assert!(e.code.is_some(), "{e}");
    assert_eq!(containers(&lab), ["a"]);

    ok(runner.del(&list, &rt_a));
    ok(runner.status(&list));
    assert_eq!(ip4_of(&ok(runner.add(&list, &rt_b))), ip("10.93.0.2"));
}

/// The ipRanges capability replaces the configuration's ranges; the dns
/// capability's servers, searches and options replace the configuration's.
#[test]
fn ip_ranges_and_dns_capabilities() {
    require_root!();
    let lab = Lab::new("cni-ranges");
    let runner = Runner::install(&lab);
    let list = rete_list("cniranges", "1.1.0", "10.105.0.0/24");
    let ns = container_ns(&lab, "a");
    let rt = RuntimeConf::new("a", &ns)
        .cap("ipRanges", json!([[{ "subnet": "10.106.0.0/24", "rangeStart": "10.106.0.100" }]]))
        .cap(
            "dns",
            json!({ "servers": ["192.0.2.54"], "searches": ["example.test"], "options": ["ndots:2"] }),
        );
    let r = ok(runner.add(&list, &rt));
    assert_eq!(r["ips"][0]["address"], "10.106.0.100/24", "{r}");
    assert_eq!(r["ips"][0]["gateway"], "10.106.0.1", "{r}");
    assert_eq!(r["dns"]["nameservers"], json!(["192.0.2.54"]), "{r}");
    assert_eq!(r["dns"]["search"], json!(["example.test"]), "{r}");
    assert_eq!(r["dns"]["options"], json!(["ndots:2"]), "{r}");
    assert!(addrs_in(&ns, "eth0").contains(" 10.106.0.100/24 "));
    ok(runner.check(&list, &rt));
    ok(runner.del(&list, &rt));
    assert_eq!(containers(&lab), Vec::<String>::new());
}

/// A conflist of one rete plugin named `name` on `subnet` with `routes` as
/// its `ipam.routes`.
fn with_routes(name: &str, subnet: &str, routes: serde_json::Value) -> NetList {
    NetList::from_value(json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{
            "type": "rete",
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": subnet }]],
                "routes": routes
            }
        }]
    }))
}

/// `ipam.routes` besides the default route: each goes into the container,
/// via its `gw` or, without one, via the range's gateway, and the result
/// lists it; a route that names no address gets error 7 and changes
/// nothing.
#[test]
fn ipam_routes_are_installed_and_listed() {
    require_root!();
    let lab = Lab::new("cni-routes");
    let runner = Runner::install(&lab);
    let list = with_routes(
        "cniroutes",
        "10.107.0.0/24",
        json!([
            { "dst": "0.0.0.0/0" },
            { "dst": "10.200.0.0/16", "gw": "10.107.0.9" },
            { "dst": "10.201.0.0/16" }
        ]),
    );
    let ns = container_ns(&lab, "a");
    let rt = RuntimeConf::new("a", &ns);
    let r = ok(runner.add(&list, &rt));
    let routes = r["routes"].as_array().unwrap();
    for (dst, gw) in [
        ("10.200.0.0/16", "10.107.0.9"),
        ("10.201.0.0/16", "10.107.0.1"),
    ] {
        assert!(routes.contains(&json!({ "dst": dst, "gw": gw })), "{r}");
    }
    let inside = sh_in(&ns, "ip -4 route");
    assert!(
        inside.contains("default via 10.107.0.1 dev eth0"),
        "{inside}"
    );
    assert!(
        inside.contains("10.200.0.0/16 via 10.107.0.9 dev eth0"),
        "{inside}"
    );
    assert!(
        inside.contains("10.201.0.0/16 via 10.107.0.1 dev eth0"),
        "{inside}"
    );
    ok(runner.del(&list, &rt));
    assert_eq!(containers(&lab), Vec::<String>::new());

    // The configuration changed its routes: the next ADD gets the new ones
    // (as the reference IPAM reads them on every ADD), and so does the
    // network rete keeps for it.
    let changed = with_routes(
        "cniroutes",
        "10.107.0.0/24",
        json!([{ "dst": "10.203.0.0/16", "gw": "10.107.0.8" }]),
    );
    let ns = container_ns(&lab, "c");
    let rt = RuntimeConf::new("c", &ns);
    let r = ok(runner.add(&changed, &rt));
    let routes = r["routes"].as_array().unwrap();
    assert!(
        routes.contains(&json!({ "dst": "10.203.0.0/16", "gw": "10.107.0.8" })),
        "{r}"
    );
    assert!(!r.to_string().contains("10.200.0.0/16"), "{r}");
    let inside = sh_in(&ns, "ip -4 route");
    assert!(
        inside.contains("10.203.0.0/16 via 10.107.0.8 dev eth0"),
        "{inside}"
    );
    assert!(!inside.contains("10.200.0.0/16"), "{inside}");
    let net = json_of(&lab, &["network", "inspect", "cniroutes"]);
    assert!(net.to_string().contains("10.203.0.0/16"), "{net}");
    ok(runner.del(&changed, &rt));

    let bad = with_routes(
        "cnibadroute",
        "10.108.0.0/24",
        json!([{ "dst": "10.202.0.0/16", "gw": "10.109.0.1" }]),
    );
    let ns = container_ns(&lab, "b");
    let f = runner
        .add(&bad, &RuntimeConf::new("b", &ns))
        .expect_err("a gateway off the range is refused");
    assert_eq!(f.code, Some(7), "{f}");
    assert!(
        f.msg.contains("gateway 10.109.0.1 is not on a subnet"),
        "{f}"
    );
    let nets = json_of(&lab, &["network", "ls", "--format", "json"]);
    assert!(
        !nets.to_string().contains("cnibadroute"),
        "the refused network was not made: {nets}"
    );
}

/// After a reboot the store is still there and the kernel's state is not:
/// the network's bridge and every namespace are gone. The next ADD (a
/// runtime cannot be told to run `rete gc`) rebuilds the bridge, releases
/// the attachments whose namespaces went, and succeeds.
#[test]
fn add_after_a_reboot_rebuilds_the_bridge() {
    require_root!();
    let lab = Lab::new("cni-reboot");
    let runner = Runner::install(&lab);
    let list = rete_list("cniboot", "1.1.0", "10.92.0.0/24");
    let ns0 = container_ns(&lab, "c0");
    assert_eq!(
        ip4_of(&ok(runner.add(&list, &RuntimeConf::new("c0", &ns0)))),
        ip("10.92.0.2")
    );
    let net = json_of(&lab, &["network", "inspect", "cniboot"]);
    let bridge = net[0]["bridge"].as_str().unwrap().to_string();

    // "Reboot": the namespace and the bridge go; the store stays.
    rete::netns::remove(&ns0).unwrap();
    lab.sh_host(&format!("ip link del {bridge}"));

    // c1 asks for c0's address: refused unless c0's lease was released.
    let ns1 = container_ns(&lab, "c1");
    let rt1 = RuntimeConf::new("c1", &ns1).arg("IP", "10.92.0.2");
    let r = ok(runner.add(&list, &rt1));
    assert_eq!(ip4_of(&r), ip("10.92.0.2"), "c0's lease was released");
    assert_eq!(containers(&lab), vec!["c1".to_string()]);
    assert!(lab.host_links().contains(&bridge), "{:?}", lab.host_links());
    assert!(ping(&ns1, ip("10.92.0.1")), "c1 reaches its gateway");
    ok(runner.del(&list, &rt1));
    assert_eq!(containers(&lab), Vec::<String>::new());
}
