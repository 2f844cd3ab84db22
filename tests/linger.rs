//! The kernel's after-work left to a process of rete's own (src/linger.rs):
//! a deleted link is down when `delete_link` returns and gone for any
//! network change made after, a missing one is no error, a veth deleted
//! from the end in another namespace is so in both, and a descriptor given
//! to `close_later` does get closed.

mod common;

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use common::*;

/// The names of the host namespace's links.
fn links(lab: &Lab) -> Vec<String> {
    links_in(&lab.host)
}

/// Whether a link of the namespace at `ns` named `name` is up.
fn up_in(ns: &std::path::Path, name: &str) -> bool {
    sh_in(ns, "ip -o link show")
        .lines()
        .any(|l| link_name(l) == Some(name) && (l.contains(",UP") || l.contains("<UP")))
}

/// The names of the links of the namespace at `ns`.
fn links_in(ns: &std::path::Path) -> Vec<String> {
    link_names(&sh_in(ns, "ip -o link show"))
}

#[test]
fn a_deleted_link_is_down_on_return_and_gone_for_the_next_change() {
    require_root!();
    let lab = Lab::new("linger");
    lab.sh_host(
        "ip link add lg-br type bridge && ip link set lg-br up && \
         ip link add lg-a master lg-br up type veth peer name lg-b",
    );
    assert!(links(&lab).contains(&"lg-a".to_string()));
    in_ns(&lab.host, || rete::linger::delete_link("lg-a")).expect("delete lg-a");
    // Both ends down on return, gone for the next change: their names are
    // free at once.
    assert!(!up_in(&lab.host, "lg-a") && !up_in(&lab.host, "lg-b"));
    lab.sh_host("ip link add lg-a type veth peer name lg-b && ip link del lg-a");
    let now = links(&lab);
    assert!(!now.iter().any(|l| l == "lg-a" || l == "lg-b"), "{now:?}");
    // Already gone, and never there: not an error.
    in_ns(&lab.host, || rete::linger::delete_link("lg-a")).expect("delete lg-a again");
    in_ns(&lab.host, || rete::linger::delete_link("lg-none")).expect("delete lg-none");
    // A link that cannot be deleted this way: the kernel's error comes back.
    let e = in_ns(&lab.host, || rete::linger::delete_link("lo")).unwrap_err();
    assert!(e.raw_os_error().is_some(), "{e}");
    assert!(links(&lab).contains(&"lg-br".to_string()));
}

#[test]
fn a_pair_deleted_from_its_inner_end_is_down_and_gone_in_both_namespaces() {
    require_root!();
    let lab = Lab::new("linger-in");
    // Unpinned with the lab's.
    let inner = lab.container_ns("c");
    rete::netns::create(&inner).expect("create container namespace");
    // The pair spans the two namespaces, its host end on a bridge; the host
    // has a link of the inner end's name too, which must stay.
    lab.sh_host(&format!(
        "ip link add lg-br type bridge && ip link set lg-br up && \
         ip link add lg-h master lg-br up type veth peer name eth0 netns {} && \
         ip link add eth0 type veth peer name lg-o",
        inner.display()
    ));
    sh_in(&inner, "ip link set eth0 up");
    let ns = std::fs::File::open(&inner).expect("open container namespace");
    rete::linger::delete_link_in(&ns, "eth0").expect("delete eth0 inside");
    // Down on both sides on return, and gone for the next change: both
    // names are free at once; the host's own eth0 untouched.
    assert!(!up_in(&inner, "eth0") && !up_in(&lab.host, "lg-h"));
    sh_in(
        &inner,
        "ip link add eth0 type veth peer name lg-p && ip link del eth0",
    );
    lab.sh_host("ip link add lg-h type veth peer name lg-p && ip link del lg-h");
    let host = links(&lab);
    assert!(!host.iter().any(|l| l == "lg-h"), "{host:?}");
    assert!(
        host.iter().any(|l| l == "eth0") && host.iter().any(|l| l == "lg-o"),
        "{host:?}"
    );
    let now = links_in(&inner);
    assert!(!now.iter().any(|l| l == "eth0"), "{now:?}");
    assert_eq!(sh_in(&lab.host, "ip -o link show master lg-br"), "");
    // Already gone: not an error, and the host's eth0 still stays.
    rete::linger::delete_link_in(&ns, "eth0").expect("delete eth0 inside again");
    assert!(links(&lab).iter().any(|l| l == "eth0"));
}

#[test]
fn a_descriptor_closed_later_is_closed() {
    let mut fds = [0; 2];
    // SAFETY: room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors owned here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    rete::linger::close_later(write);
    // The read end sees the end of the pipe once the last copy of the
    // write end, the lingering process's, is closed.
    let mut pfd = libc::pollfd {
        fd: read.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; bounded wait.
    let ready = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert_eq!(ready, 1, "the write end is still open after 10 s");
    let mut buf = Vec::new();
    std::fs::File::from(read)
        .read_to_end(&mut buf)
        .expect("read to the end");
    assert!(buf.is_empty());
}
