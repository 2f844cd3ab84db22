//! A batching DNS load generator: the second client of the DNS benchmark.
//!
//! dnsperf sends and receives one datagram per system call; on a 2-core
//! machine it saturates its core before rete's resolver saturates the
//! other, so its qps measures dnsperf as much as the server. This client
//! keeps a fixed window of queries outstanding on one UDP socket and moves
//! them in batches (sendmmsg, recvmmsg: up to 64 datagrams per call), so
//! the client costs a fraction of what the server does and the server is
//! what gets measured. It treats every server alike: the same window, the
//! same names in the same order, the same 1 s timeout. A reply counts only
//! if it carries the ID of a query still outstanding and the NOERROR code
//! with at least one answer.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Datagrams per sendmmsg/recvmmsg call.
const BATCH: usize = 64;
/// A query unanswered this long is lost.
const TIMEOUT: Duration = Duration::from_secs(1);

/// What one load run measured.
#[derive(Debug, Default, Clone, Copy)]
pub struct Load {
    pub sent: u64,
    pub answered: u64,
    pub lost: u64,
    pub qps: f64,
}

/// One A query for `name` (labels separated by dots), ID 0, recursion
/// desired.
fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Loads `server` from inside the namespace `ns` for `duration` with
/// `window` queries outstanding, asking for `names` in turn; `cpu` pins the
/// client thread.
pub fn run(
    ns: File,
    cpu: Option<usize>,
    server: SocketAddr,
    names: Vec<String>,
    window: usize,
    duration: Duration,
) -> Result<Load, String> {
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("enter the client namespace: {e}"))?;
        if let Some(cpu) = cpu {
            let mut set = nix::sched::CpuSet::new();
            set.set(cpu).map_err(|e| e.to_string())?;
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                .map_err(|e| format!("pin the client: {e}"))?;
        }
        flood(server, &names, window.clamp(1, 60_000), duration)
    })
    .join()
    .map_err(|_| "load generator panicked".to_string())?
}

fn flood(
    server: SocketAddr,
    names: &[String],
    window: usize,
    duration: Duration,
) -> Result<Load, String> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    sock.connect(server).map_err(|e| e.to_string())?;
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let fd = sock.as_raw_fd();
    let packets: Vec<Vec<u8>> = names.iter().map(|n| query(n)).collect();
    // When each ID was sent, for the IDs in flight.
    let mut sent_at: Vec<Option<Instant>> = vec![None; 65536];
    let mut next_id: u16 = 0;
    let mut next_name = 0usize;
    let mut outstanding = 0usize;
    let mut load = Load::default();
    let mut out: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut inb = vec![[0u8; 1500]; BATCH];
    let start = Instant::now();
    let mut last_sweep = start;
    while start.elapsed() < duration {
        // Top the window up.
        let mut n = 0;
        while outstanding + n < window && n < BATCH {
            while sent_at[next_id as usize].is_some() {
                next_id = next_id.wrapping_add(1);
            }
            let p = &mut out[n];
            p.clear();
            p.extend_from_slice(&packets[next_name % packets.len()]);
            p[0..2].copy_from_slice(&next_id.to_be_bytes());
            sent_at[next_id as usize] = Some(Instant::now());
            next_id = next_id.wrapping_add(1);
            next_name += 1;
            n += 1;
        }
        if n > 0 {
            let sent = send_batch(fd, &mut out[..n]);
            // Queries the kernel did not take are not in flight.
            for p in &out[sent..n] {
                sent_at[u16::from_be_bytes([p[0], p[1]]) as usize] = None;
            }
            outstanding += sent;
            load.sent += sent as u64;
        }
        // Take what has come back, waiting briefly when nothing has.
        let got = recv_batch(fd, &mut inb, outstanding >= window);
        for (buf, len) in got {
            let reply = &inb[buf][..len];
            if len < 12 {
                continue;
            }
            let id = u16::from_be_bytes([reply[0], reply[1]]) as usize;
            if sent_at[id].take().is_some() {
                outstanding -= 1;
                let rcode = reply[3] & 0x0f;
                let answers = u16::from_be_bytes([reply[6], reply[7]]);
                if rcode == 0 && answers > 0 {
                    load.answered += 1;
                }
            }
        }
        if last_sweep.elapsed() > Duration::from_millis(100) {
            last_sweep = Instant::now();
            for slot in sent_at.iter_mut() {
                if slot.is_some_and(|t| t.elapsed() > TIMEOUT) {
                    *slot = None;
                    outstanding -= 1;
                    load.lost += 1;
                }
            }
        }
    }
    load.qps = load.answered as f64 / start.elapsed().as_secs_f64();
    Ok(load)
}

/// Sends the packets on the connected socket; returns how many went.
fn send_batch(fd: i32, packets: &mut [Vec<u8>]) -> usize {
    // SAFETY: plain C structs, valid when zeroed.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, p) in packets.iter_mut().enumerate() {
        iovs[i] = libc::iovec {
            iov_base: p.as_mut_ptr().cast(),
            iov_len: p.len(),
        };
        msgs[i].msg_hdr.msg_iov = &raw mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0;
    while sent < packets.len() {
        // SAFETY: the headers point at the live packets above.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                msgs[sent..].as_mut_ptr(),
                (packets.len() - sent) as u32,
                0,
            )
        };
        if n <= 0 {
            break;
        }
        sent += n as usize;
    }
    sent
}

/// Receives up to a batch of datagrams; `wait` blocks up to 1 ms for the
/// first. Returns (buffer index, length) of each.
fn recv_batch(fd: i32, bufs: &mut [[u8; 1500]], wait: bool) -> Vec<(usize, usize)> {
    if wait {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 1) };
    }
    // SAFETY: plain C structs, valid when zeroed.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, b) in bufs.iter_mut().enumerate().take(BATCH) {
        iovs[i] = libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        };
        msgs[i].msg_hdr.msg_iov = &raw mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at a live buffer of the stated size.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            BATCH as u32,
            libc::MSG_DONTWAIT as _, // c_int on glibc, c_uint on musl
            std::ptr::null_mut(),
        )
    };
    (0..n.max(0) as usize)
        .map(|i| (i, msgs[i].msg_len as usize))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_a_standard_a_question() {
        assert_eq!(
            query("c0"),
            vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, b'c', b'0', 0, 0, 1, 0, 1]
        );
    }
}
