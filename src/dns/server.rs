//! The resolver process: one per host (per run dir), listening on port 53 of
//! every DNS-enabled network's gateway, UDP and TCP. Its records follow the
//! store: a watcher notices every commit (SQLite's data_version) and swaps in
//! a new zone, binding sockets for new networks and closing those of removed
//! ones, without a restart and without dropping queries in flight. It exits
//! when no DNS-enabled network remains.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::upstream::Upstreams;
use super::zone::{Decision, Zone};
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
                if !listeners.contains_key(&key) {
                    match listen(&key, &zone, &upstreams) {
                        Ok(l) => {
                            listeners.insert(key, l);
                        }
                        // The address may not be there yet (a network being
                        // created); the next change retries.
                        Err(e) => {
                            eprintln!("rete dns: listen on {}:53: {e}", key.0);
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
    tcp.set_nonblocking(true)?;
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

fn serve_udp(
    sock: UdpSocket,
    network: &str,
    zone: &Shared,
    upstreams: &Arc<RwLock<Upstreams>>,
    stop: &AtomicBool,
) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        match current(zone).answer(&buf[..n], peer.ip(), network) {
            Decision::Reply(bytes) => {
                let _ = sock.send_to(&bytes, peer);
            }
            Decision::Forward => {
                let query = buf[..n].to_vec();
                let servers = upstreams.read().expect("upstream lock").servers().to_vec();
                let Ok(reply_sock) = sock.try_clone() else {
                    continue;
                };
                // Off the serving thread: an upstream's latency must not hold
                // up answers for local names.
                std::thread::spawn(move || {
                    if let Some(answer) = forward_udp(&query, &servers) {
                        let _ = reply_sock.send_to(&answer, peer);
                    }
                });
            }
            Decision::Drop => {}
        }
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
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
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
    let _ = conn.set_nonblocking(false);
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
