//! The resolver process: one per host (per run dir), listening on port 53 of
//! every DNS-enabled network's gateway, UDP and TCP. Its records follow the
//! store: a watcher notices every commit (SQLite's data_version) and swaps in
//! a new zone, binding sockets for new networks and closing those of removed
//! ones, without a restart and without dropping queries in flight. It exits
//! when no DNS-enabled network remains.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::upstream::Upstreams;
use super::zone::{fit_udp, Decision, Zone};
use crate::config::Paths;
use crate::error::Result;
use crate::store::Store;

/// How often the watcher looks for store changes.
const WATCH: Duration = Duration::from_millis(20);
/// How long a forwarded query may take upstream, per server.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

type Shared = Arc<RwLock<Arc<Zone>>>;

struct Listener {
    stop: Arc<AtomicBool>,
}

/// Runs the resolver until no DNS-enabled network remains.
pub fn serve<L>(paths: &Paths, lock: L) -> Result<()> {
    let _lock = lock;
    let store = Store::open(&paths.state_dir)?;
    let zone: Shared = Arc::new(RwLock::new(Arc::new(Zone::default())));
    let upstreams = Arc::new(RwLock::new(Upstreams::from_env()));
    let mut listeners: HashMap<(IpAddr, String), Listener> = HashMap::new();
    let mut failing: HashMap<(IpAddr, String), String> = HashMap::new();
    let mut version = None;
    let _ = std::fs::write(
        paths.run_dir.join("dns.pid"),
        std::process::id().to_string(),
    );
    loop {
        // A state dir that vanished (a test's, a purged install) ends the
        // resolver instead of leaving it serving stale records forever.
        if !paths.state_dir.join("rete.db").exists() {
            return Ok(());
        }
        let v = store.data_version()?;
        if version != Some(v) {
            version = Some(v);
            let db = store.read();
            let fresh = Zone::build(&db.networks()?, &db.containers()?);
            if fresh.listen.is_empty() {
                for l in listeners.values() {
                    l.stop.store(true, Ordering::Relaxed);
                }
                return Ok(());
            }
            let wanted: Vec<(IpAddr, String)> = fresh.listen.clone();
            *zone.write().expect("zone lock") = Arc::new(fresh);
            listeners.retain(|key, l| {
                let keep = wanted.contains(key);
                if !keep {
                    l.stop.store(true, Ordering::Relaxed);
                }
                keep
            });
            for key in wanted {
                if let Entry::Vacant(slot) = listeners.entry(key) {
                    match listen(slot.key(), &zone, &upstreams) {
                        Ok(l) => {
                            failing.remove(slot.key());
                            slot.insert(l);
                        }
                        // The address may not be there yet (a network being
                        // created): retried at the next poll, reported once.
                        Err(e) => {
                            let e = e.to_string();
                            if failing.get(slot.key()) != Some(&e) {
                                eprintln!("rete dns: listen on {}:53: {e}", slot.key().0);
                                failing.insert(slot.key().clone(), e);
                            }
                            version = None;
                        }
                    }
                }
            }
        }
        upstreams.write().expect("upstream lock").refresh();
        std::thread::sleep(WATCH);
    }
}

fn listen(
    (addr, network): &(IpAddr, String),
    zone: &Shared,
    upstreams: &Arc<RwLock<Upstreams>>,
) -> std::io::Result<Listener> {
    let at = SocketAddr::new(*addr, 53);
    let udp = UdpSocket::bind(at)?;
    let tcp = TcpListener::bind(at)?;
    udp.set_read_timeout(Some(Duration::from_millis(200)))?;
    set_accept_timeout(&tcp, Duration::from_millis(200))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (zone, upstreams, stop, network) = (
            zone.clone(),
            upstreams.clone(),
            stop.clone(),
            network.clone(),
        );
        std::thread::spawn(move || serve_udp(udp, &network, &zone, &upstreams, &stop));
    }
    {
        let (zone, upstreams, stop, network) = (
            zone.clone(),
            upstreams.clone(),
            stop.clone(),
            network.clone(),
        );
        std::thread::spawn(move || serve_tcp(tcp, &network, &zone, &upstreams, &stop));
    }
    Ok(Listener { stop })
}

fn current(zone: &Shared) -> Arc<Zone> {
    zone.read().expect("zone lock").clone()
}

/// Datagrams taken from the socket per system call under load.
const BATCH: usize = 32;

fn serve_udp(
    sock: UdpSocket,
    network: &str,
    zone: &Shared,
    upstreams: &Arc<RwLock<Upstreams>>,
    stop: &AtomicBool,
) {
    // Under load, queries are taken and answered in batches (recvmmsg,
    // sendmmsg): one wake-up and two system calls for many queries. A lone
    // query is answered at once, as with recv_from.
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; 4096]; BATCH];
    // SAFETY: plain C structs, valid when zeroed.
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut replies: Vec<(Vec<u8>, usize)> = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Relaxed) {
        for i in 0..BATCH {
            iovs[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: bufs[i].len(),
            };
            msgs[i].msg_hdr.msg_name = (&raw mut names[i]).cast();
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            msgs[i].msg_hdr.msg_iov = &raw mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = std::ptr::null_mut();
            msgs[i].msg_hdr.msg_controllen = 0;
            msgs[i].msg_hdr.msg_flags = 0;
        }
        // SAFETY: every header points at live buffers of the stated sizes.
        // Blocks for the first datagram (up to the socket's read timeout),
        // then takes what is already queued.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE as _, // c_int on glibc, c_uint on musl
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let z = current(zone);
        replies.clear();
        for i in 0..n as usize {
            let Some(peer) = socket_addr(&names[i]) else {
                continue;
            };
            let query = &bufs[i][..msgs[i].msg_len as usize];
            match z.answer(query, peer.ip(), network) {
                Decision::Reply(bytes) => replies.push((fit_udp(query, bytes), i)),
                Decision::Forward => {
                    let query = query.to_vec();
                    let servers = upstreams.read().expect("upstream lock").servers().to_vec();
                    let Ok(reply_sock) = sock.try_clone() else {
                        continue;
                    };
                    // Off the serving thread: an upstream's latency must not
                    // hold up answers for local names.
                    std::thread::spawn(move || {
                        if let Some(answer) = forward_udp(&query, &servers) {
                            let _ = reply_sock.send_to(&answer, peer);
                        }
                    });
                }
                Decision::Drop => {}
            }
        }
        send_replies(fd, &mut replies, &mut names, &msgs);
    }
}

/// Sends each reply to the sender of datagram `i` of the batch.
fn send_replies(
    fd: std::os::fd::RawFd,
    replies: &mut [(Vec<u8>, usize)],
    names: &mut [libc::sockaddr_storage; BATCH],
    received: &[libc::mmsghdr; BATCH],
) {
    // SAFETY: plain C structs, valid when zeroed.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (k, (bytes, i)) in replies.iter_mut().enumerate() {
        iovs[k] = libc::iovec {
            iov_base: bytes.as_mut_ptr().cast(),
            iov_len: bytes.len(),
        };
        msgs[k].msg_hdr.msg_name = (&raw mut names[*i]).cast();
        msgs[k].msg_hdr.msg_namelen = received[*i].msg_hdr.msg_namelen;
        msgs[k].msg_hdr.msg_iov = &raw mut iovs[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0;
    while sent < replies.len() {
        // SAFETY: the headers point at the replies and addresses above.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                msgs[sent..].as_mut_ptr(),
                (replies.len() - sent) as u32,
                0,
            )
        };
        if n <= 0 {
            // The reply that failed is dropped (the client retries); the
            // others are still sent.
            sent += 1;
        } else {
            sent += n as usize;
        }
    }
}

/// The address in a sockaddr_storage filled in by the kernel.
fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says which struct it is.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::new(
                IpAddr::V4(u32::from_be(a.sin_addr.s_addr).into()),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: as above.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn forward_udp(query: &[u8], servers: &[SocketAddr]) -> Option<Vec<u8>> {
    for server in servers {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .ok()?;
        let Ok(s) = UdpSocket::bind(bind) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(UPSTREAM_TIMEOUT));
        if s.send_to(query, server).is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            if from == *server && n >= 2 && buf[..2] == query[..2] {
                buf.truncate(n);
                return Some(buf);
            }
        }
    }
    None
}

fn serve_tcp(
    l: TcpListener,
    network: &str,
    zone: &Shared,
    upstreams: &Arc<RwLock<Upstreams>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((conn, peer)) => {
                let (zone, upstreams, network) =
                    (zone.clone(), upstreams.clone(), network.to_string());
                std::thread::spawn(move || serve_conn(conn, peer, &network, &zone, &upstreams));
            }
            // The timeout: a look at `stop`.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // Out of descriptors, a connection that went away: a pause
            // rather than a busy loop.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Makes `accept` on `l` give up after `t`, so its thread can notice that
/// it should stop without polling.
fn set_accept_timeout(l: &TcpListener, t: Duration) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as _,
        tv_usec: t.subsec_micros() as _,
    };
    // SAFETY: a valid socket and a timeval of the size given.
    let rc = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One TCP connection: length-prefixed queries until the client closes or
/// goes quiet for 10 s.
fn serve_conn(
    mut conn: TcpStream,
    peer: SocketAddr,
    network: &str,
    zone: &Shared,
    upstreams: &Arc<RwLock<Upstreams>>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    loop {
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        if conn.read_exact(&mut query).is_err() {
            return;
        }
        let answer = match current(zone).answer(&query, peer.ip(), network) {
            Decision::Reply(bytes) => Some(bytes),
            Decision::Forward => {
                let servers = upstreams.read().expect("upstream lock").servers().to_vec();
                forward_tcp(&query, &servers)
            }
            Decision::Drop => None,
        };
        let Some(answer) = answer else { return };
        let mut out = (answer.len() as u16).to_be_bytes().to_vec();
        out.extend(answer);
        if conn.write_all(&out).is_err() {
            return;
        }
    }
}

fn forward_tcp(query: &[u8], servers: &[SocketAddr]) -> Option<Vec<u8>> {
    for server in servers {
        let Ok(mut s) = TcpStream::connect_timeout(server, UPSTREAM_TIMEOUT) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(UPSTREAM_TIMEOUT));
        let mut msg = (query.len() as u16).to_be_bytes().to_vec();
        msg.extend(query);
        if s.write_all(&msg).is_err() {
            continue;
        }
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            continue;
        }
        let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
        if s.read_exact(&mut answer).is_ok() {
            return Some(answer);
        }
    }
    None
}
