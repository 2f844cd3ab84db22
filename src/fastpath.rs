//! A shortcut past the bridge for traffic between containers of one
//! network: an eBPF program at the tc ingress of every host-side veth end
//! looks up the frame's IPv4 destination in the network's map (address →
//! the host end of that container's veth and its MAC) and, for a frame
//! addressed to that very MAC, hands it straight to the peer inside the
//! destination's namespace (`bpf_redirect_peer`). The frame skips the
//! bridge and the second veth crossing; everything else (ARP, IPv6, traffic
//! for the gateway, the host or other networks, frames for any other MAC)
//! goes on as before.
//!
//! The same program is the first hop of a router for the cluster network
//! (`crate::cluster`): a packet a container sends to its gateway's MAC for
//! an address in another host's container subnet (the network's second
//! map, longest prefix → the device toward that host and the next hop on
//! it) gets its TTL decremented and leaves through that device
//! (`bpf_redirect_neigh`: the kernel's neighbour entry for the next hop
//! gives the MACs), past the bridge, routing and the forward hooks.
//!
//! A second program over the first map is the last hop of a router: at the
//! ingress of the device cluster traffic from other hosts arrives on (the
//! underlay interface for host-gw, the VXLAN device for vxlan), a packet
//! for the address of a local container gets its TTL decremented, the
//! container's MAC as destination and the bridge's as source, and goes
//! straight into the container's namespace, past routing, the bridge and
//! the container's host end. Only what the host itself would forward that
//! way, unchanged, is taken: frames to this host's MAC (not broadcast, not
//! another's), IPv4 with a TTL left to decrement. rete's firewall passes
//! that traffic untouched (no isolation, masquerade or DNAT applies to it),
//! so skipping netfilter on that hop changes no verdict.
//!
//! The programs are a handful of instructions, assembled here: no compiler
//! or loader library is needed, only the `bpf(2)` system call.

use std::io;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::netlink::{Link, Rtnl};

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
/// Required of an LPM trie.
const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PSEUDO_MAP_FD: u8 = 1;

// Helpers the program calls.
const FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const FUNC_REDIRECT_NEIGH: i32 = 152;
const FUNC_REDIRECT_PEER: i32 = 155;

/// AF_INET, as `struct bpf_redir_neigh` wants the next hop's family.
const AF_INET: i32 = 2;

/// TC_ACT_UNSPEC: let the rest of the ingress path (the bridge) have it.
const TC_ACT_UNSPEC: i32 = -1;

/// A Linux bridge takes at most 1023 ports.
const MAX_ENTRIES: u32 = 1024;

/// The program's name, by which rete knows it from others on a device.
pub const PROG_NAME: &str = "rete_fastpath";

/// The routed program's name.
pub const ROUTED_NAME: &str = "rete_routed";

/// The routed program's filter priority on a device rete does not own
/// (above the `pref 1` other tools take by default).
const ROUTED_PRIORITY: u16 = 0x7e7e;

/// Size of a map value: the host end's ifindex, then the MAC.
const VALUE_SIZE: usize = 12;

/// The name of the map of other hosts' subnets.
const ROUTES_NAME: &str = "rete_routes";

/// Other hosts a cluster network's routes map can hold.
const MAX_ROUTES: u32 = 4096;

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
    pub fn create() -> io::Result<Map> {
        Self::create_as(
            BPF_MAP_TYPE_HASH,
            4,
            VALUE_SIZE as u32,
            MAX_ENTRIES,
            0,
            PROG_NAME,
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
    fn of_program(prog: &Program, name: &str) -> io::Result<Option<Map>> {
        for id in prog.info()?.1 {
            let mut attr = [0u8; 16];
            put_u32(&mut attr, 0, id);
            let map = Map(fd_of(bpf(BPF_MAP_GET_FD_BY_ID, &mut attr)?));
            if map.name()? == name {
                return Ok(Some(map));
            }
        }
        Ok(None)
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
}

/// A cluster network's map of other hosts' container subnets: longest
/// prefix → the device toward that host and the next hop on it.
pub struct Routes(Map);

impl Routes {
    fn create() -> io::Result<Routes> {
        Map::create_as(
            BPF_MAP_TYPE_LPM_TRIE,
            8,
            8,
            MAX_ROUTES,
            BPF_F_NO_PREALLOC,
            ROUTES_NAME,
        )
        .map(Routes)
    }

    fn key(subnet: Ipv4Net) -> [u8; 8] {
        let mut key = [0u8; 8];
        key[..4].copy_from_slice(&u32::from(subnet.prefix_len()).to_ne_bytes());
        key[4..].copy_from_slice(&subnet.network().octets());
        key
    }

    /// Packets for `subnet` leave through `device` toward `next_hop`.
    pub fn insert(&self, subnet: Ipv4Net, device: u32, next_hop: Ipv4Addr) -> io::Result<()> {
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&device.to_ne_bytes());
        value[4..].copy_from_slice(&next_hop.octets());
        self.0.update(&Self::key(subnet), &value)
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

/// The loaded program of one network.
pub struct Program(OwnedFd);

impl Program {
    /// Loads the program over `map` and `routes`, for a bridge whose MAC
    /// is `gateway`.
    fn load(map: &Map, routes: &Routes, gateway: [u8; 6]) -> io::Result<Program> {
        let insns = program(map.0.as_raw_fd(), routes.0 .0.as_raw_fd(), gateway);
        Self::load_insns(&insns, PROG_NAME)
    }

    /// Loads the routed program over `map`, giving delivered frames
    /// `gateway` as their source MAC.
    pub fn load_routed(map: &Map, gateway: [u8; 6]) -> io::Result<Program> {
        Self::load_insns(&routed_program(map.0.as_raw_fd(), gateway), ROUTED_NAME)
    }

    fn load_insns(insns: &[Insn], name: &str) -> io::Result<Program> {
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
    pub fn by_id(id: u32) -> io::Result<Program> {
        let mut attr = [0u8; 16];
        put_u32(&mut attr, 0, id);
        let p = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(|r| Program(fd_of(r)))?;
        if p.info()?.0 != PROG_NAME {
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

/// One eBPF instruction.
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

// Opcodes used below.
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const ADD64_IMM: u8 = 0x07;
const MOV32_IMM: u8 = 0xb4;
const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const LDX_B: u8 = 0x71;
const STX_W: u8 = 0x63;
const STX_H: u8 = 0x6b;
const STX_B: u8 = 0x73;
const JGT_REG: u8 = 0x2d;
const JLE_IMM: u8 = 0xb5;
const JLT_IMM: u8 = 0xa5;
const JNE_IMM: u8 = 0x55;
const JNE_REG: u8 = 0x5d;
const JEQ_IMM: u8 = 0x15;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;

// struct __sk_buff offsets.
const SKB_PKT_TYPE: i16 = 4;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

/// Jump offsets that [`finish`] replaces: to the pass exit, and to the
/// start of the program's route lookup.
const PASS: i16 = i16::MIN;
const ROUTE: i16 = i16::MIN + 1;

fn is_jump(code: u8) -> bool {
    matches!(
        code,
        JGT_REG | JNE_IMM | JNE_REG | JEQ_IMM | JLE_IMM | JLT_IMM
    )
}

/// Instructions both programs start with: r6 the context, r7 the frame's
/// start; passes unless the frame holds an Ethernet and an IPv4 header up
/// to the destination address (the first 34 bytes) and, when `routed`, is
/// for this host's MAC with a TTL above 1. Leaves the destination address
/// on the stack at r10 - 4, the key of the lookup that follows.
fn head(routed: bool) -> Vec<Insn> {
    let mut p = vec![
        insn(MOV64_REG, 6, 1, 0, 0),
        insn(LDX_W, 7, 6, SKB_DATA, 0),
        insn(LDX_W, 3, 6, SKB_DATA_END, 0),
        insn(MOV64_REG, 4, 7, 0, 0),
        insn(ADD64_IMM, 4, 0, 0, 34),
        insn(JGT_REG, 4, 3, PASS, 0),
        // EtherType IPv4 (0x0800, read little-endian).
        insn(LDX_H, 4, 7, 12, 0),
        insn(JNE_IMM, 4, 0, PASS, 0x0008),
    ];
    if routed {
        p.extend([
            // PACKET_HOST: addressed to this device.
            insn(LDX_W, 4, 6, SKB_PKT_TYPE, 0),
            insn(JNE_IMM, 4, 0, PASS, 0),
        ]);
        p.extend(TTL_LEFT);
    }
    p.extend([insn(LDX_W, 4, 7, 30, 0), insn(STX_W, 10, 4, -4, 0)]);
    p
}

/// Passes a packet whose TTL would run out here: the stack answers it
/// (ICMP time exceeded).
const TTL_LEFT: [Insn; 2] = [insn(LDX_B, 4, 7, 22, 0), insn(JLE_IMM, 4, 0, PASS, 1)];

/// The lookup in map `map_fd` of the key at r10 + `key`: r0 the value, or
/// a jump to `missed`.
fn lookup(map_fd: RawFd, key: i32, missed: i16) -> [Insn; 6] {
    [
        insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_REG, 2, 10, 0, 0),
        insn(ADD64_IMM, 2, 0, 0, key),
        insn(CALL, 0, 0, 0, FUNC_MAP_LOOKUP_ELEM),
        insn(JEQ_IMM, 0, 0, missed, 0),
    ]
}

/// `bpf_redirect_peer` to the value's host end, the program's verdict.
const DELIVER: [Insn; 4] = [
    insn(LDX_W, 1, 0, 0, 0),
    insn(MOV64_IMM, 2, 0, 0, 0),
    insn(CALL, 0, 0, 0, FUNC_REDIRECT_PEER),
    insn(EXIT, 0, 0, 0, 0),
];

/// TTL − 1, with the header checksum + htons(0x0100) and the end-around
/// carry, as the kernel's ip_decrease_ttl (the halfword is read
/// little-endian). Uses r1 only.
const DECREMENT_TTL: [Insn; 8] = [
    insn(LDX_B, 1, 7, 22, 0),
    insn(ADD64_IMM, 1, 0, 0, -1),
    insn(STX_B, 7, 1, 22, 0),
    insn(LDX_H, 1, 7, 24, 0),
    insn(ADD64_IMM, 1, 0, 0, 1),
    insn(JLT_IMM, 1, 0, 1, 0xffff),
    insn(ADD64_IMM, 1, 0, 0, 1),
    insn(STX_H, 7, 1, 24, 0),
];

/// A MAC as the word and the halfword a little-endian load of it reads.
fn mac_words(mac: [u8; 6]) -> (i32, i32) {
    (
        i32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
        i32::from(u16::from_le_bytes([mac[4], mac[5]])),
    )
}

/// Appends the pass exit (TC_ACT_UNSPEC) and points the jumps marked
/// [`PASS`] at it and those marked [`ROUTE`] at instruction `route`.
fn finish(mut p: Vec<Insn>, route: Option<usize>) -> Vec<Insn> {
    let pass = p.len();
    p.push(insn(MOV64_IMM, 0, 0, 0, TC_ACT_UNSPEC));
    p.push(insn(EXIT, 0, 0, 0, 0));
    for (i, ins) in p.iter_mut().enumerate().take(pass) {
        if !is_jump(ins.code) {
            continue;
        }
        let target = match ins.off {
            PASS => pass,
            ROUTE => route.expect("a program that jumps to its route lookup has one"),
            _ => continue,
        };
        // Counted from the next instruction.
        ins.off = (target - i - 1) as i16;
    }
    p
}

/// The program at the host ends and the bridge, over the network's map
/// (`map_fd`) and routes (`routes_fd`), for a bridge whose MAC is
/// `gateway`:
/// - a frame for a container's address and MAC goes to that container;
/// - else a frame to the gateway's MAC for an address in the routes leaves
///   through the route's device toward its next hop, TTL decremented;
/// - else it passes.
fn program(map_fd: RawFd, routes_fd: RawFd, gateway: [u8; 6]) -> Vec<Insn> {
    let (gw_word, gw_half) = mac_words(gateway);
    let mut p = head(false);
    p.extend(lookup(map_fd, -4, ROUTE));
    p.extend([
        // Only a frame addressed to that container's MAC.
        insn(LDX_W, 1, 7, 0, 0),
        insn(LDX_W, 2, 0, 4, 0),
        insn(JNE_REG, 1, 2, PASS, 0),
        insn(LDX_H, 1, 7, 4, 0),
        insn(LDX_H, 2, 0, 8, 0),
        insn(JNE_REG, 1, 2, PASS, 0),
    ]);
    p.extend(DELIVER);
    let route = p.len();
    p.extend([
        // Routed by this host: sent to the gateway's MAC.
        insn(LDX_W, 1, 7, 0, 0),
        insn(MOV32_IMM, 2, 0, 0, gw_word),
        insn(JNE_REG, 1, 2, PASS, 0),
        insn(LDX_H, 1, 7, 4, 0),
        insn(MOV32_IMM, 2, 0, 0, gw_half),
        insn(JNE_REG, 1, 2, PASS, 0),
    ]);
    p.extend(TTL_LEFT);
    // The LPM key: prefix length 32, then the address already at r10 - 4.
    p.extend([insn(MOV64_IMM, 1, 0, 0, 32), insn(STX_W, 10, 1, -8, 0)]);
    p.extend(lookup(routes_fd, -8, PASS));
    p.extend([
        // struct bpf_redir_neigh at r10 - 28: family, next hop, zeros.
        insn(MOV64_IMM, 1, 0, 0, AF_INET),
        insn(STX_W, 10, 1, -28, 0),
        insn(LDX_W, 1, 0, 4, 0),
        insn(STX_W, 10, 1, -24, 0),
        insn(MOV64_IMM, 1, 0, 0, 0),
        insn(STX_W, 10, 1, -20, 0),
        insn(STX_W, 10, 1, -16, 0),
        insn(STX_W, 10, 1, -12, 0),
    ]);
    p.extend(DECREMENT_TTL);
    p.extend([
        insn(LDX_W, 1, 0, 0, 0),
        insn(MOV64_REG, 2, 10, 0, 0),
        insn(ADD64_IMM, 2, 0, 0, -28),
        insn(MOV64_IMM, 3, 0, 0, 20),
        insn(MOV64_IMM, 4, 0, 0, 0),
        insn(CALL, 0, 0, 0, FUNC_REDIRECT_NEIGH),
        insn(EXIT, 0, 0, 0, 0),
    ]);
    finish(p, Some(route))
}

/// The routed program: a packet for a container's address is forwarded to
/// it as the host would, with its TTL decremented, the container's MAC as
/// destination and `gateway` (the bridge's) as source.
fn routed_program(map_fd: RawFd, gateway: [u8; 6]) -> Vec<Insn> {
    let (gw_word, gw_half) = mac_words(gateway);
    let mut p = head(true);
    p.extend(lookup(map_fd, -4, PASS));
    p.extend([
        // Destination MAC: the container's.
        insn(LDX_W, 1, 0, 4, 0),
        insn(STX_W, 7, 1, 0, 0),
        insn(LDX_H, 1, 0, 8, 0),
        insn(STX_H, 7, 1, 4, 0),
        // Source MAC: the gateway's.
        insn(MOV32_IMM, 1, 0, 0, gw_word),
        insn(STX_W, 7, 1, 6, 0),
        insn(MOV32_IMM, 1, 0, 0, gw_half),
        insn(STX_H, 7, 1, 10, 0),
    ]);
    p.extend(DECREMENT_TTL);
    p.extend(DELIVER);
    finish(p, None)
}

/// The network's program and its map of containers, found through the
/// filter on its bridge (which also keeps them alive while the network has
/// no container), or made and put there.
fn of_bridge(host: &mut Rtnl, bridge: u32) -> io::Result<(Program, Map)> {
    if let Some(id) = host.ingress_program(bridge, PROG_NAME)? {
        if let Ok(prog) = Program::by_id(id) {
            let map = Map::of_program(&prog, PROG_NAME)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "fast path program without its map",
                )
            })?;
            return Ok((prog, map));
        }
    }
    let gateway = host
        .link_by_index(bridge)?
        .and_then(|l| mac_of(&l))
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
    let map = Map::create()?;
    let routes = Routes::create()?;
    let prog = Program::load(&map, &routes, gateway)?;
    host.attach_ingress_program(bridge, prog.fd(), PROG_NAME)?;
    Ok((prog, map))
}

fn mac_of(link: &Link) -> Option<[u8; 6]> {
    link.mac
        .as_deref()
        .and_then(|m| <[u8; 6]>::try_from(m).ok())
}

/// The routes of the network on `bridge` (made with its program if it has
/// none yet).
pub fn routes(host: &mut Rtnl, bridge: &Link) -> io::Result<Routes> {
    let (prog, _) = of_bridge(host, bridge.index)?;
    Map::of_program(&prog, ROUTES_NAME)?
        .map(Routes)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "the network's fast path program predates routes to other hosts",
            )
        })
}

/// Puts a container's host end `host_end` (on bridge `bridge`) on the
/// network's shortcut: frames from the other containers for `ip` and `mac`
/// go straight to it, and its own frames for them straight to theirs.
pub fn join(
    host: &mut Rtnl,
    bridge: u32,
    host_end: u32,
    ip: Ipv4Addr,
    mac: [u8; 6],
) -> io::Result<()> {
    let (prog, map) = of_bridge(host, bridge)?;
    host.attach_ingress_program(host_end, prog.fd(), PROG_NAME)?;
    map.insert(ip, host_end, mac)
}

/// Puts the routed program of the network on `bridge` at the
/// ingress of `device` (replacing one a previous run left), so that packets
/// arriving there for the network's containers go straight to them.
pub fn route_into(host: &mut Rtnl, bridge: &Link, device: u32) -> io::Result<()> {
    let gateway = mac_of(bridge).ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
    let (_, map) = of_bridge(host, bridge.index)?;
    let prog = Program::load_routed(&map, gateway)?;
    host.detach_ingress_program(device, ROUTED_NAME)?;
    host.attach_ingress_program_at(device, ROUTED_PRIORITY, prog.fd(), ROUTED_NAME)
}

/// Takes the routed program off `device` (nothing to do when it has none).
pub fn unroute(host: &mut Rtnl, device: u32) -> io::Result<()> {
    host.detach_ingress_program(device, ROUTED_NAME)
}

/// Takes `ip` off the shortcut of the network whose bridge host end
/// `host_end` is a port of (nothing to do when it is in no bridge, or the
/// bridge has no program).
pub fn leave(host: &mut Rtnl, host_end: &str, ip: Ipv4Addr) -> io::Result<()> {
    let Some(bridge) = host.link(host_end)?.and_then(|l| l.controller) else {
        return Ok(());
    };
    match map_of_bridge(host, bridge)? {
        Some(map) => map.remove(ip),
        None => Ok(()),
    }
}

/// The map of the network on bridge `bridge`, if it has a program (none is
/// made).
fn map_of_bridge(host: &mut Rtnl, bridge: u32) -> io::Result<Option<Map>> {
    let Some(id) = host.ingress_program(bridge, PROG_NAME)? else {
        return Ok(None);
    };
    let Ok(prog) = Program::by_id(id) else {
        return Ok(None);
    };
    Map::of_program(&prog, PROG_NAME)
}

/// The addresses on the shortcut of the network on bridge `bridge`.
pub fn entries(host: &mut Rtnl, bridge: u32) -> io::Result<Vec<Ipv4Addr>> {
    Ok(match map_of_bridge(host, bridge)? {
        Some(map) => map
            .keys(4)?
            .into_iter()
            .map(|k| Ipv4Addr::new(k[0], k[1], k[2], k[3]))
            .collect(),
        None => Vec::new(),
    })
}

/// Takes every address but those in `keep` off the shortcut of the
/// network on bridge `bridge` (entries a killed process left: they would
/// send a later container's traffic to a device that is gone); returns
/// those it took off.
pub fn prune(host: &mut Rtnl, bridge: u32, keep: &[Ipv4Addr]) -> io::Result<Vec<Ipv4Addr>> {
    let Some(map) = map_of_bridge(host, bridge)? else {
        return Ok(Vec::new());
    };
    let mut gone = Vec::new();
    for k in map.keys(4)? {
        let ip = Ipv4Addr::new(k[0], k[1], k[2], k[3]);
        if !keep.contains(&ip) {
            map.remove(ip)?;
            gone.push(ip);
        }
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: [u8; 6] = [2, 0, 0, 0, 0, 1];

    #[test]
    fn jumps_land_inside_the_program_and_misses_pass() {
        for p in [program(3, 4, GW), routed_program(3, GW)] {
            let pass = p.len() - 2;
            assert_eq!(p[pass].imm, TC_ACT_UNSPEC);
            for (i, ins) in p.iter().enumerate().filter(|(_, x)| is_jump(x.code)) {
                let to = i + 1 + ins.off as usize;
                assert!(ins.off >= 0 && to <= pass, "jump at {i} to {to}");
            }
        }
    }

    #[test]
    fn a_container_miss_goes_on_to_the_route_lookup() {
        let p = program(3, 4, GW);
        let maps: Vec<usize> = (0..p.len()).filter(|&i| p[i].code == LD_IMM64).collect();
        assert_eq!(maps.len(), 2);
        assert_eq!((p[maps[0]].imm, p[maps[1]].imm), (3, 4));
        // The null check after the first lookup jumps past the delivery,
        // to the gateway MAC check; the one after the second passes.
        let miss = maps[0] + 5;
        assert_eq!(p[miss].code, JEQ_IMM);
        let to = miss + 1 + p[miss].off as usize;
        assert_eq!((p[to].code, p[to + 1].code), (LDX_W, MOV32_IMM));
        assert!(to < maps[1]);
        let miss = maps[1] + 5;
        assert_eq!(miss + 1 + p[miss].off as usize, p.len() - 2);
        assert!(p
            .iter()
            .any(|x| x.code == CALL && x.imm == FUNC_REDIRECT_NEIGH));
    }

    #[test]
    fn lpm_keys_hold_the_prefix_length_then_the_network() {
        let k = Routes::key("10.244.7.0/24".parse().unwrap());
        assert_eq!(k, [24, 0, 0, 0, 10, 244, 7, 0]);
    }

    #[test]
    fn the_checksum_carry_skips_one_instruction() {
        let p = routed_program(3, [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
        assert_eq!(p.iter().filter(|x| x.code == JLT_IMM).count(), 1);
        let i = p.iter().position(|x| x.code == JLT_IMM).unwrap();
        assert_eq!((p[i].off, p[i].imm), (1, 0xffff));
        assert_eq!(p[i + 1].code, ADD64_IMM);
        assert_eq!(p[i + 2].code, STX_H);
        // The gateway MAC, as the bytes the stores write.
        let w = p.iter().find(|x| x.code == MOV32_IMM).unwrap();
        assert_eq!(w.imm.to_le_bytes(), [0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn encoding() {
        let b = insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, 7).bytes();
        assert_eq!(b, [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        let b = insn(STX_W, 10, 4, -4, 0).bytes();
        assert_eq!(b, [0x63, 0x4a, 0xfc, 0xff, 0, 0, 0, 0]);
    }
}
