//! The kernel's waits that come after an operation is done, left to a
//! process of rete's own so that rete returns without them.
//!
//! Three such waits are most of what removing a container costs:
//! - **Deleting a network device.** The kernel first closes the device
//!   (and a veth's peer with it) and says so (an RTM_NEWLINK without
//!   IFF_UP); from then on the deletion cannot fail and nothing passes
//!   through the device. It unlists it next (RTM_DELLINK), and before it
//!   frees it, it makes the deleting process wait for every pending RCU
//!   callback of the machine (`rcu_barrier`, ~20 ms here). All of it but
//!   the freeing happens under the lock every network change takes
//!   (rtnl), so a change asked for after the close (a device of the same
//!   name, an address) is served once the device is unlisted.
//!   [`delete_link`] returns at the close, or, for a device already down,
//!   once it is unlisted.
//! - **Taking a veth's host end off a crowded bridge.** The kernel deletes
//!   both ends of a pair in one batch: it closes both, the end it was asked
//!   to delete first, then unlists both and finishes each in turn. Every
//!   step the host end takes as a bridge port walks the bridge's ports:
//!   once when it closes (the spanning tree's port selections, ~1 ms with
//!   1000 ports here), a dozen times when it leaves the bridge (headroom,
//!   features, upper-device links, the forwarding database, ~2 ms). Asked
//!   from the container's end ([`delete_link_in`]), the container end's
//!   close is said before any of that starts.
//! - **Closing the last nftables socket after a commit that deleted
//!   elements.** The kernel frees deleted elements after an RCU grace period
//!   and makes the process closing a netfilter socket wait for that
//!   (~15 ms here). [`close_later`] returns at once.
//!
//! The process that waits instead is a grandchild: its parent exits at
//! once, so init (or the nearest subreaper) reaps it, and a long-running
//! caller collects no zombies. It runs in a session of its own, so a
//! terminal's Ctrl-C meant for rete does not cut its work short, and it
//! keeps no descriptor but those its work needs, so a runtime reading
//! rete's output sees the end of it when rete ends. Between the fork and
//! its exit it makes only async-signal-safe system calls, on memory made
//! before the fork, which is safe whatever other threads the caller has.
//! When it cannot be started, or ends without saying how its work went, the
//! caller does the work itself and waits, as it would without it.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::LinkUnspec;

use nix::sys::socket::{setsockopt, sockopt};

use crate::netlink::Rtnl;
use crate::netns;

/// How long [`delete_link`] waits for the kernel to close or unlist the
/// device.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);

/// RTMGRP_LINK: the multicast group of link notifications.
const RTMGRP_LINK: u32 = 1;

/// NLMSG_ERROR, the acknowledgement's type.
const NLMSG_ERROR: u16 = 2;

/// Deletes link `name` of the caller's network namespace (a link already
/// gone is not an error), returning once the kernel has closed it to delete
/// it (see the module); the rest of the kernel's work goes on in a process
/// of rete's own.
pub fn delete_link(name: &str) -> io::Result<()> {
    delete(None, name)
}

/// Deletes link `name` of network namespace `ns` (a link already gone is
/// not an error), as [`delete_link`] does in the caller's: returns once the
/// kernel has closed it, which it says in `ns`.
pub fn delete_link_in(ns: &File, name: &str) -> io::Result<()> {
    delete(Some(ns), name)
}

fn delete(ns: Option<&File>, name: &str) -> io::Result<()> {
    match Deletion::start(ns, name) {
        Ok(d) => d.wait(),
        // No process to wait in: wait here.
        Err(_) => rtnl_of(ns)?.del_link(name),
    }
}

/// An rtnetlink socket in namespace `ns`, or in the caller's.
fn rtnl_of(ns: Option<&File>) -> io::Result<Rtnl> {
    match ns {
        Some(ns) => Rtnl::open_in(ns),
        None => Rtnl::open(),
    }
}

/// Closes `fd` in a process of rete's own, after this one has closed its
/// copy: the close that waits for the kernel happens there. Without such a
/// process, `fd` is closed here.
pub fn close_later(fd: OwnedFd) {
    let Ok((read, write)) = pipe() else {
        return;
    };
    let keep = sorted([fd.as_raw_fd(), read.as_raw_fd()]);
    // SAFETY: the child only makes async-signal-safe calls (see the module).
    let child = unsafe {
        spawn(|| {
            keep_only(&keep);
            // Until every copy of the write end is closed: the caller closes
            // its own after its copy of `fd`.
            let mut byte = 0u8;
            while libc::read(read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) != 0
                && errno() == libc::EINTR
            {}
            libc::close(fd.as_raw_fd());
        })
    };
    drop(fd);
    drop(write);
    if let Ok(pid) = child {
        reap(pid);
    }
}

/// A link deletion handed to a process of rete's own.
struct Deletion<'a> {
    /// The link's namespace; None for the caller's.
    ns: Option<&'a File>,
    name: &'a str,
    /// Link notifications of the namespace, subscribed to before the
    /// deletion was asked for.
    monitor: OwnedFd,
    /// The deleting process writes the kernel's answer here (0 or an errno),
    /// or closes it without writing when it could not ask.
    status: OwnedFd,
}

impl<'a> Deletion<'a> {
    fn start(ns: Option<&'a File>, name: &'a str) -> io::Result<Self> {
        // A netlink socket belongs to the namespace it was made in.
        let (monitor, request_socket) = match ns {
            Some(ns) => netns::run_in(ns, deletion_sockets)??,
            None => deletion_sockets()?,
        };
        let request = del_link_request(name);
        let (status, status_w) = pipe()?;
        let keep = sorted([request_socket.as_raw_fd(), status_w.as_raw_fd()]);
        let mut ack = vec![0u8; 4096];
        // SAFETY: the child only makes async-signal-safe calls (see the module).
        let child = unsafe {
            spawn(|| {
                keep_only(&keep);
                let sock = request_socket.as_raw_fd();
                let mut answer: i32 = 0;
                if libc::send(sock, request.as_ptr().cast(), request.len(), 0) < 0 {
                    answer = errno();
                } else {
                    let n = libc::recv(sock, ack.as_mut_ptr().cast(), ack.len(), 0);
                    if n < 0 {
                        answer = errno();
                    } else if n >= 20 && u16::from_ne_bytes([ack[4], ack[5]]) == NLMSG_ERROR {
                        answer = -i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]);
                    }
                }
                libc::write(
                    status_w.as_raw_fd(),
                    (&answer as *const i32).cast(),
                    std::mem::size_of::<i32>(),
                );
            })
        };
        drop(status_w);
        reap(child?);
        Ok(Deletion {
            ns,
            name,
            monitor,
            status,
        })
    }

    /// Waits until the link is closed or unlisted (see [`closed_or_unlisted`])
    /// or the deleting process has the kernel's answer.
    fn wait(self) -> io::Result<()> {
        let deadline = Instant::now() + DELETE_TIMEOUT;
        let mut watching = true;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the kernel did not delete {} within {DELETE_TIMEOUT:?}",
                        self.name
                    ),
                ));
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.status.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: if watching {
                        self.monitor.as_raw_fd()
                    } else {
                        -1
                    },
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: two valid pollfd entries.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) } < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if fds[0].revents != 0 {
                return self.answer();
            }
            if fds[1].revents != 0 {
                // SAFETY: buf is writable for its length.
                let n = unsafe {
                    libc::recv(
                        self.monitor.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    match io::Error::last_os_error().raw_os_error() {
                        Some(libc::EAGAIN) | Some(libc::EINTR) => {}
                        // ENOBUFS: notifications were lost, perhaps the one
                        // awaited. The status will come.
                        _ => watching = false,
                    }
                    continue;
                }
                if closed_or_unlisted(&buf[..n as usize], self.name) {
                    return Ok(());
                }
            }
        }
    }

    /// The deleting process's answer; without one, the deletion done here.
    fn answer(&self) -> io::Result<()> {
        let mut answer = [0u8; 4];
        // SAFETY: answer is writable for its length.
        let n = unsafe { libc::read(self.status.as_raw_fd(), answer.as_mut_ptr().cast(), 4) };
        if n != 4 {
            return rtnl_of(self.ns)?.del_link(self.name);
        }
        match i32::from_ne_bytes(answer) {
            0 | libc::ENODEV => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Whether the notifications in `datagram` say that link `name` went down
/// (an RTM_NEWLINK whose change mask has IFF_UP and whose flags do not: the
/// close a deletion starts with, since the link was subscribed to just
/// before its deletion was asked for) or is deleted (RTM_DELLINK).
fn closed_or_unlisted(datagram: &[u8], name: &str) -> bool {
    // The device's own notifications, not the bridge's (AF_BRIDGE)
    // about it as a port.
    let own = |link: &LinkMessage| {
        link.header.interface_family == AddressFamily::Unspec
            && link
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfName(n) if n == name))
    };
    let mut off = 0;
    while off < datagram.len() {
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[off..]) else {
            return false;
        };
        let len = msg.header.length as usize;
        let said = match &msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => own(link),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                let h = &link.header;
                own(link)
                    && h.change_mask.contains(LinkFlags::Up)
                    && !h.flags.contains(LinkFlags::Up)
            }
            _ => false,
        };
        if said {
            return true;
        }
        if len == 0 {
            return false;
        }
        off += (len + 3) & !3;
    }
    false
}

/// A deletion's two sockets, in the calling thread's namespace: one
/// subscribed to its link notifications, one to ask.
fn deletion_sockets() -> io::Result<(OwnedFd, OwnedFd)> {
    let monitor = netlink_socket(RTMGRP_LINK)?;
    // A busy namespace's notifications must not crowd out the one
    // awaited; a lost one only means waiting for the status instead.
    let _ = setsockopt(&monitor, sockopt::RcvBufForce, &(4 << 20));
    Ok((monitor, netlink_socket(0)?))
}

/// RTM_DELLINK for link `name`, acknowledged.
fn del_link_request(name: &str) -> Vec<u8> {
    let msg = RouteNetlinkMessage::DelLink(LinkUnspec::new_with_name(name).build());
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);
    buf
}

/// An rtnetlink socket bound to multicast `groups`, connected to the kernel.
fn netlink_socket(groups: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; zero is a valid start.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = groups;
    let len = std::mem::size_of::<libc::sockaddr_nl>() as u32;
    // SAFETY: addr is a valid sockaddr_nl of length len.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            len,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    addr.nl_groups = 0;
    // SAFETY: as above; pid 0 is the kernel.
    if unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            len,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// A pipe, both ends close-on-exec: (read, write).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn sorted<const N: usize>(mut fds: [RawFd; N]) -> [RawFd; N] {
    fds.sort_unstable();
    fds
}

/// Runs `work` in a grandchild in a session of its own, which then exits;
/// returns the child to reap (it exits as soon as it has forked).
///
/// # Safety
/// `work` runs between fork and exit: it must make only async-signal-safe
/// calls (no allocation, no locks, no panics).
unsafe fn spawn(work: impl FnOnce()) -> io::Result<libc::pid_t> {
    match libc::fork() {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            if libc::fork() == 0 {
                libc::setsid();
                work();
            }
            libc::_exit(0)
        }
        child => Ok(child),
    }
}

/// Waits for the short-lived child of [`spawn`].
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for our own child only.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && errno() == libc::EINTR {}
}

/// Closes every descriptor but `keep` (ascending).
///
/// # Safety
/// Async-signal-safe; meant for the child of [`spawn`].
unsafe fn keep_only(keep: &[RawFd]) {
    let mut low: libc::c_uint = 0;
    for &fd in keep {
        let fd = fd as libc::c_uint;
        if fd > low {
            libc::syscall(libc::SYS_close_range, low, fd - 1, 0);
        }
        low = fd + 1;
    }
    libc::syscall(libc::SYS_close_range, low, libc::c_uint::MAX, 0);
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
