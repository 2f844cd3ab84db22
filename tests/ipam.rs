//! Addresses as the store hands them out across rete processes: each one
//! after the last handed out, a released one last, wrapping around; a full
//! network refused by name and left as it was; a store from before the
//! allocation cursor brought up to date.

mod common;

use std::net::IpAddr;

use common::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn addresses_follow_the_last_one_handed_out_and_wrap_around() {
    require_root!();
    let lab = Lab::new("ipamorder");
    // A /29: the gateway .1, then .2 to .6 for containers.
    lab.rete_ok(&["network", "create", "small", "--subnet", "10.71.0.0/29"]);
    for name in ["a", "b", "c"] {
        lab.rete_ok(&["create", name, "--network", "small"]);
    }
    assert_eq!(lab.addr_of("a", "small", false), ip("10.71.0.2"));
    assert_eq!(lab.addr_of("c", "small", false), ip("10.71.0.4"));

    // a's address is released, but the next one comes after c's.
    lab.rete_ok(&["rm", "a"]);
    lab.rete_ok(&["create", "d", "--network", "small"]);
    assert_eq!(lab.addr_of("d", "small", false), ip("10.71.0.5"));
    // An address asked for does not move where allocation continues.
    lab.rete_ok(&["create", "e", "--network", "small", "--ip", "10.71.0.2"]);
    lab.rete_ok(&["create", "f", "--network", "small"]);
    assert_eq!(lab.addr_of("f", "small", false), ip("10.71.0.6"));

    // Full: refused by name, nothing of g left behind.
    let before = lab.host_links();
    let err = lab.rete_err(&["create", "g", "--network", "small"]);
    assert!(
        err.contains("small") && err.contains("no free address"),
        "{err}"
    );
    assert_eq!(lab.host_links(), before);
    assert!(
        !lab.rete(&["inspect", "g"]).status.success(),
        "g was recorded"
    );

    // Past the end, allocation wraps to the first free address.
    lab.rete_ok(&["rm", "c"]);
    lab.rete_ok(&["create", "h", "--network", "small"]);
    assert_eq!(lab.addr_of("h", "small", false), ip("10.71.0.4"));

    // A network made again under the same name starts from the beginning.
    lab.rete_ok(&["network", "rm", "--force", "small"]);
    lab.rete_ok(&["network", "create", "small", "--subnet", "10.71.0.0/29"]);
    lab.rete_ok(&["create", "i", "--network", "small"]);
    assert_eq!(lab.addr_of("i", "small", false), ip("10.71.0.2"));
    lab.rete_ok(&["rm", "b", "d", "e", "f", "h", "i"]);
    lab.rete_ok(&["network", "rm", "small"]);
    assert_no_residue(&lab);
}

#[test]
fn a_store_from_before_the_allocation_cursor_is_brought_up_to_date() {
    require_root!();
    let lab = Lab::new("ipamupgrade");
    lab.rete_ok(&["network", "create", "old", "--subnet", "10.72.0.0/24"]);
    lab.rete_ok(&["create", "a", "--network", "old"]);
    // What a store of schema version 1 looked like: no cursor table.
    {
        let db = rusqlite::Connection::open(lab.state_dir().join("rete.db")).unwrap();
        db.execute_batch("DROP TABLE ipam_cursors; PRAGMA user_version = 1;")
            .unwrap();
    }
    lab.rete_ok(&["create", "b", "--network", "old"]);
    assert_eq!(lab.addr_of("a", "old", false), ip("10.72.0.2"));
    assert_eq!(lab.addr_of("b", "old", false), ip("10.72.0.3"));
    // The upgraded store keeps where allocation stopped: after b's, not a's
    // released address.
    lab.rete_ok(&["rm", "a"]);
    lab.rete_ok(&["create", "c", "--network", "old"]);
    assert_eq!(lab.addr_of("c", "old", false), ip("10.72.0.4"));
    lab.rete_ok(&["rm", "b", "c"]);
    lab.rete_ok(&["network", "rm", "old"]);
    assert_no_residue(&lab);
}
