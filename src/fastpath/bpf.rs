//! The bpf(2) system call, as far as the fast path needs it: hash and
//! longest-prefix maps, loading a sched_cls program, and finding a loaded
//! program and its maps again by id (the next process does that).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use ipnet::Ipv4Net;

use super::asm::Insn;

// bpf(2) commands (linux/bpf.h).
const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_MAP_DELETE_ELEM: i32 = 3;
const BPF_MAP_GET_NEXT_KEY: i32 = 4;
const BPF_PROG_LOAD: i32 = 5;
const BPF_PROG_GET_FD_BY_ID: i32 = 13;
const BPF_MAP_GET_FD_BY_ID: i32 = 14;
const BPF_OBJ_GET_INFO_BY_FD: i32 = 15;

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// Required of an LPM trie.
const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// A Linux bridge takes at most 1023 ports.
const MAX_ENTRIES: u32 = 1024;

/// Size of a container map value: the host end's ifindex, then the MAC.
const VALUE_SIZE: usize = 12;

/// Other hosts a cluster network's routes map can hold.
const MAX_ROUTES: u32 = 4096;

/// Published ports a network's ports map can hold (host address, port and
/// protocol each).
const MAX_PORTS: u32 = 16384;

/// Connections through published ports a network's flows map remembers;
/// the least recently used go first.
const MAX_FLOWS: u32 = 65536;

fn bpf(cmd: i32, attr: &mut [u8]) -> io::Result<i64> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` of `attr.len()`
    // bytes, which the kernel reads (and for some commands writes) only
    // within that length; pointers in it point at live buffers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn put_u32(attr: &mut [u8], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn put_name(attr: &mut [u8], at: usize, name: &str) {
    let n = name.len().min(15);
    attr[at..at + n].copy_from_slice(&name.as_bytes()[..n]);
}

fn fd_of(r: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor to us.
    unsafe { OwnedFd::from_raw_fd(r as RawFd) }
}

/// A network's map: IPv4 address → where to deliver frames for it.
pub struct Map(OwnedFd);

impl Map {
    /// A new (empty) map of containers, named `name`.
    pub fn create(name: &str) -> io::Result<Map> {
        Self::create_as(
            BPF_MAP_TYPE_HASH,
            4,
            VALUE_SIZE as u32,
            MAX_ENTRIES,
            0,
            name,
        )
    }

    fn create_as(
        kind: u32,
        key: u32,
        value: u32,
        entries: u32,
        flags: u32,
        name: &str,
    ) -> io::Result<Map> {
        let mut attr = [0u8; 72];
        put_u32(&mut attr, 0, kind);
        put_u32(&mut attr, 4, key);
        put_u32(&mut attr, 8, value);
        put_u32(&mut attr, 12, entries);
        put_u32(&mut attr, 16, flags);
        put_name(&mut attr, 28, name);
        bpf(BPF_MAP_CREATE, &mut attr).map(|r| Map(fd_of(r)))
    }

    /// The map named `name` a loaded program uses, if it uses one.
    pub fn of_program(prog: &Program, name: &str) -> io::Result<Option<Map>> {
        Ok(Map::all_of_program(prog)?
            .into_iter()
            .find_map(|(n, map)| (n == name).then_some(map)))
    }

    /// Every map a loaded program uses, with its name.
    pub fn all_of_program(prog: &Program) -> io::Result<Vec<(String, Map)>> {
        let mut out = Vec::new();
        for id in prog.info()?.1 {
            let mut attr = [0u8; 16];
            put_u32(&mut attr, 0, id);
            let map = Map(fd_of(bpf(BPF_MAP_GET_FD_BY_ID, &mut attr)?));
            out.push((map.name()?, map));
        }
        Ok(out)
    }

    fn name(&self) -> io::Result<String> {
        let mut info = [0u8; 88];
        let mut attr = [0u8; 16];
        put_u32(&mut attr, 0, self.0.as_raw_fd() as u32);
        put_u32(&mut attr, 4, info.len() as u32);
        put_u64(&mut attr, 8, info.as_mut_ptr() as u64);
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        Ok(c_name(&info[24..40]))
    }

    fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let mut attr = [0u8; 32];
        put_u32(&mut attr, 0, self.0.as_raw_fd() as u32);
        put_u64(&mut attr, 8, key.as_ptr() as u64);
        put_u64(&mut attr, 16, value.as_ptr() as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }

    /// Deletes `key`; one that is not there is not an error.
    fn delete(&self, key: &[u8]) -> io::Result<()> {
        let mut attr = [0u8; 32];
        put_u32(&mut attr, 0, self.0.as_raw_fd() as u32);
        put_u64(&mut attr, 8, key.as_ptr() as u64);
        match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Every key, `size` bytes each.
    fn keys(&self, size: usize) -> io::Result<Vec<Vec<u8>>> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut next = vec![0u8; size];
            let mut attr = [0u8; 32];
            put_u32(&mut attr, 0, self.0.as_raw_fd() as u32);
            // No key (0) asks for the first.
            if let Some(k) = keys.last() {
                put_u64(&mut attr, 8, k.as_ptr() as u64);
            }
            put_u64(&mut attr, 16, next.as_mut_ptr() as u64);
            match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
                Err(e) => return Err(e),
                Ok(_) => keys.push(next),
            }
            if keys.len() > MAX_ROUTES as usize + MAX_ENTRIES as usize {
                return Ok(keys);
            }
        }
    }

    /// Frames for `ip` go to the peer of host end `ifindex`, when they are
    /// addressed to `mac`.
    pub fn insert(&self, ip: Ipv4Addr, ifindex: u32, mac: [u8; 6]) -> io::Result<()> {
        let mut value = [0u8; VALUE_SIZE];
        value[..4].copy_from_slice(&ifindex.to_ne_bytes());
        value[4..10].copy_from_slice(&mac);
        self.update(&ip.octets(), &value)
    }

    /// Forgets `ip`; one that is not there is not an error.
    pub fn remove(&self, ip: Ipv4Addr) -> io::Result<()> {
        self.delete(&ip.octets())
    }

    /// The addresses it holds.
    pub fn addresses(&self) -> io::Result<Vec<Ipv4Addr>> {
        Ok(self
            .keys(4)?
            .into_iter()
            .map(|k| Ipv4Addr::new(k[0], k[1], k[2], k[3]))
            .collect())
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// How packets for another host's subnet leave this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Routed to `next_hop` on `device` (host-gw).
    Routed { device: u32, next_hop: Ipv4Addr },
    /// VXLAN: encapsulated from this host's `local` address and VTEP MAC
    /// `local_mac` to `peer` and its VTEP MAC `peer_mac`, network `vni`,
    /// and sent out of `device` toward `peer`.
    Vxlan {
        device: u32,
        local: Ipv4Addr,
        local_mac: [u8; 6],
        peer: Ipv4Addr,
        peer_mac: [u8; 6],
        vni: u32,
    },
}

/// Where a [`Hop`]'s fields are in a routes map value (what the programs
/// read).
pub mod hop {
    /// u32: the device to leave through.
    pub const DEVICE: i16 = 0;
    /// IPv4: the next hop, or the VXLAN peer.
    pub const NEXT_HOP: i16 = 4;
    /// u32: 0 routed, 1 VXLAN.
    pub const KIND: i16 = 8;
    /// The peer's VTEP MAC.
    pub const PEER_MAC: i16 = 12;
    /// This host's VTEP MAC.
    pub const LOCAL_MAC: i16 = 18;
    /// IPv4: this host's underlay address.
    pub const LOCAL: i16 = 24;
    /// The VXLAN header's second word: the VNI (24 bits) and a zero byte.
    pub const VNI: i16 = 28;
    pub const SIZE: usize = 32;
    pub const KIND_VXLAN: i32 = 1;
}

impl Hop {
    fn value(&self) -> [u8; hop::SIZE] {
        let mut v = [0u8; hop::SIZE];
        let mut put = |at: i16, bytes: &[u8]| {
            v[at as usize..at as usize + bytes.len()].copy_from_slice(bytes)
        };
        match *self {
            Hop::Routed { device, next_hop } => {
                put(hop::DEVICE, &device.to_ne_bytes());
                put(hop::NEXT_HOP, &next_hop.octets());
            }
            Hop::Vxlan {
                device,
                local,
                local_mac,
                peer,
                peer_mac,
                vni,
            } => {
                put(hop::DEVICE, &device.to_ne_bytes());
                put(hop::NEXT_HOP, &peer.octets());
                put(hop::KIND, &(hop::KIND_VXLAN as u32).to_ne_bytes());
                put(hop::PEER_MAC, &peer_mac);
                put(hop::LOCAL_MAC, &local_mac);
                put(hop::LOCAL, &local.octets());
                put(hop::VNI, &(vni << 8).to_be_bytes());
            }
        }
        v
    }
}

/// A cluster network's map of other hosts' container subnets: longest
/// prefix → the [`Hop`] toward that host.
pub struct Routes(pub(super) Map);

impl Routes {
    /// A new (empty) routes map, named `name`.
    pub fn create(name: &str) -> io::Result<Routes> {
        Map::create_as(
            BPF_MAP_TYPE_LPM_TRIE,
            8,
            hop::SIZE as u32,
            MAX_ROUTES,
            BPF_F_NO_PREALLOC,
            name,
        )
        .map(Routes)
    }

    fn key(subnet: Ipv4Net) -> [u8; 8] {
        let mut key = [0u8; 8];
        key[..4].copy_from_slice(&u32::from(subnet.prefix_len()).to_ne_bytes());
        key[4..].copy_from_slice(&subnet.network().octets());
        key
    }

    /// Packets for `subnet` leave as `hop` says.
    pub fn insert(&self, subnet: Ipv4Net, hop: Hop) -> io::Result<()> {
        self.0.update(&Self::key(subnet), &hop.value())
    }

    /// Forgets `subnet`; one that is not there is not an error.
    pub fn remove(&self, subnet: Ipv4Net) -> io::Result<()> {
        self.0.delete(&Self::key(subnet))
    }

    /// Forgets every subnet.
    pub fn clear(&self) -> io::Result<()> {
        for k in self.0.keys(8)? {
            self.0.delete(&k)?;
        }
        Ok(())
    }
}

/// A network's published ports taken past the host's stack: (host
/// address, port, protocol) → (container address, port). See
/// [`port`] for the layout.
pub struct Ports(pub(super) Map);

/// Layouts of the ports map's keys and values, and of the flows map's,
/// as the programs read them (addresses and ports in network order).
pub mod port {
    /// Key: host address (4), port (2), protocol (1), zero (1).
    pub const KEY_SIZE: usize = 8;
    /// Value: container address (4), port (2), zero (2).
    pub const VALUE_SIZE: usize = 8;
    /// Flow key: container address (4), client address (4), container
    /// port (2), client port (2), protocol (1), zeros (3).
    pub const FLOW_KEY_SIZE: usize = 16;
    /// Flow value: host address (4), host port (2), zero (2), the device
    /// the connection arrived on (4).
    pub const FLOW_VALUE_SIZE: usize = 12;
}

/// One published port, IPv4, TCP (6) or UDP (17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub host: Ipv4Addr,
    pub host_port: u16,
    pub protocol: u8,
    pub container: Ipv4Addr,
    pub container_port: u16,
}

impl Ports {
    pub fn create(name: &str) -> io::Result<Ports> {
        Map::create_as(
            BPF_MAP_TYPE_HASH,
            port::KEY_SIZE as u32,
            port::VALUE_SIZE as u32,
            MAX_PORTS,
            0,
            name,
        )
        .map(Ports)
    }

    fn key(p: &Published) -> [u8; port::KEY_SIZE] {
        let mut key = [0u8; port::KEY_SIZE];
        key[..4].copy_from_slice(&p.host.octets());
        key[4..6].copy_from_slice(&p.host_port.to_be_bytes());
        key[6] = p.protocol;
        key
    }

    pub fn insert(&self, p: &Published) -> io::Result<()> {
        let mut value = [0u8; port::VALUE_SIZE];
        value[..4].copy_from_slice(&p.container.octets());
        value[4..6].copy_from_slice(&p.container_port.to_be_bytes());
        self.0.update(&Self::key(p), &value)
    }

    /// Forgets `p`; one that is not there is not an error.
    pub fn remove(&self, p: &Published) -> io::Result<()> {
        self.0.delete(&Self::key(p))
    }
}

/// A network's connections through published ports: what the reply
/// path needs to give a container's answers the host's address and port.
pub struct Flows(pub(super) Map);

impl Flows {
    pub fn create(name: &str) -> io::Result<Flows> {
        Map::create_as(
            BPF_MAP_TYPE_LRU_HASH,
            port::FLOW_KEY_SIZE as u32,
            port::FLOW_VALUE_SIZE as u32,
            MAX_FLOWS,
            0,
            name,
        )
        .map(Flows)
    }
}

/// The loaded program of one network.
pub struct Program(OwnedFd);

impl Program {
    /// Loads `insns` as a sched_cls program named `name`.
    pub fn load(insns: &[Insn], name: &str) -> io::Result<Program> {
        let code: Vec<u8> = insns.iter().flat_map(Insn::bytes).collect();
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_SCHED_CLS);
        put_u32(&mut attr, 4, insns.len() as u32);
        put_u64(&mut attr, 8, code.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        put_name(&mut attr, 48, name);
        bpf(BPF_PROG_LOAD, &mut attr).map(|r| Program(fd_of(r)))
    }

    /// A program loaded earlier (by any process), by its id.
    pub fn by_id(id: u32, name: &str) -> io::Result<Program> {
        let mut attr = [0u8; 16];
        put_u32(&mut attr, 0, id);
        let p = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(|r| Program(fd_of(r)))?;
        if p.info()?.0 != name {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("program {id} is not rete's"),
            ));
        }
        Ok(p)
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Its name and the ids of its maps (up to 4).
    fn info(&self) -> io::Result<(String, Vec<u32>)> {
        let mut info = [0u8; 96];
        let mut map_ids = [0u32; 4];
        put_u32(&mut info, 52, map_ids.len() as u32); // nr_map_ids
        put_u64(&mut info, 56, map_ids.as_mut_ptr() as u64);
        let mut attr = [0u8; 16];
        put_u32(&mut attr, 0, self.0.as_raw_fd() as u32);
        put_u32(&mut attr, 4, info.len() as u32);
        put_u64(&mut attr, 8, info.as_mut_ptr() as u64);
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        // The kernel writes the number of maps the program has.
        let n = u32::from_ne_bytes(info[52..56].try_into().expect("4 bytes")) as usize;
        let ids = map_ids[..n.min(map_ids.len())].to_vec();
        Ok((c_name(&info[64..80]), ids))
    }
}

/// A NUL-padded name of the kernel's.
fn c_name(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}
