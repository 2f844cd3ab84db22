//! The first end-to-end check: two containers on one network talk, and a
//! published port answers from outside the host.

mod common;

use common::*;

#[test]
fn two_containers_talk_and_a_published_port_answers_from_outside() {
    require_root!();
    let lab = Lab::new("basic");
    lab.rete_ok(&["network", "create", "web", "--subnet", "10.70.0.0/24"]);
    lab.rete_ok(&["create", "a", "--network", "web", "-p", "8080:80"]);
    lab.rete_ok(&["create", "b", "--network", "web"]);
    let a = lab.addr_of("a", "web", false);
    let b = lab.addr_of("b", "web", false);
    assert!(ping(&lab.container_ns("a"), b), "a should reach b");

    let _srv = Server::tcp(&lab.container_ns("a"), a, 80, "hello-from-a", 2);
    let host_uplink = UPLINK_HOST.parse().unwrap();
    let got =
        tcp_get(&lab.outside, host_uplink, 8080).expect("published port answers from outside");
    assert!(got.starts_with("hello-from-a "), "{got}");
    // The client's own address arrives unchanged (no masquerade inbound).
    assert!(got.ends_with(UPLINK_OUTSIDE), "{got}");

    // The server thread holds a's namespace, as a process in it would.
    drop(_srv);
    lab.rete_ok(&["rm", "a", "b"]);
    lab.rete_ok(&["network", "rm", "web"]);
    assert!(
        !lab.host_links().iter().any(|l| l.starts_with("rete")),
        "{:?}",
        lab.host_links()
    );
    assert_eq!(lab.nft(), "", "the table goes with the last network");
}
