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
//! A second program over the same map is the last hop of a router: at the
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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::netlink::{Link, Rtnl};

// bpf(2) commands (linux/bpf.h).
const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_MAP_DELETE_ELEM: i32 = 3;
const BPF_PROG_LOAD: i32 = 5;
const BPF_PROG_GET_FD_BY_ID: i32 = 13;
const BPF_MAP_GET_FD_BY_ID: i32 = 14;
const BPF_OBJ_GET_INFO_BY_FD: i32 = 15;

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PSEUDO_MAP_FD: u8 = 1;

// Helpers the program calls.
const FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const FUNC_REDIRECT_PEER: i32 = 155;

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
        let mut attr = [0u8; 72];
        put_u32(&mut attr, 0, BPF_MAP_TYPE_HASH);
        put_u32(&mut attr, 4, 4);
        put_u32(&mut attr, 8, VALUE_SIZE as u32);
        put_u32(&mut attr, 12, MAX_ENTRIES);
        put_name(&mut attr, 28, "rete_fastpath");
        bpf(BPF_MAP_CREATE, &mut attr).map(|r| Map(fd_of(r)))
    }

    /// The map a loaded program uses, by the program's id.
    pub fn of_program(prog: &Program) -> io::Result<Map> {
        let map_id = prog.info()?.1;
        let mut attr = [0u8; 16];
        put_u32(&mut attr, 0, map_id);
        bpf(BPF_MAP_GET_FD_BY_ID, &mut attr).map(|r| Map(fd_of(r)))
    }

    /// Frames for `ip` go to the peer of host end `ifindex`, when they are
    /// addressed to `mac`.
    pub fn insert(&self, ip: Ipv4Addr, ifindex: u32, mac: [u8; 6]) -> io::Result<()> {
        let key = ip.octets();
        let mut value = [0u8; VALUE_SIZE];
        value[..4].copy_from_slice(&ifindex.to_ne_bytes());
        value[4..10].copy_from_slice(&mac);
        let mut attr = [0u8; 32];
        put_u32(&mut attr, 0, self.0.as_raw_fd() as u32);
        put_u64(&mut attr, 8, key.as_ptr() as u64);
        put_u64(&mut attr, 16, value.as_ptr() as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }

    /// Forgets `ip`; one that is not there is not an error.
    pub fn remove(&self, ip: Ipv4Addr) -> io::Result<()> {
        let key = ip.octets();
        let mut attr = [0u8; 32];
        put_u32(&mut attr, 0, self.0.as_raw_fd() as u32);
        put_u64(&mut attr, 8, key.as_ptr() as u64);
        match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other.map(drop),
        }
    }
}

/// The loaded program of one network.
pub struct Program(OwnedFd);

impl Program {
    /// Loads the program over `map`.
    pub fn load(map: &Map) -> io::Result<Program> {
        Self::load_insns(&program(map.0.as_raw_fd()), PROG_NAME)
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

    /// Its name and the id of its (one) map.
    fn info(&self) -> io::Result<(String, u32)> {
        let mut info = [0u8; 96];
        let mut map_id: u32 = 0;
        put_u32(&mut info, 52, 1); // nr_map_ids
        put_u64(&mut info, 56, &mut map_id as *mut u32 as u64);
        let mut attr = [0u8; 16];
        put_u32(&mut attr, 0, self.0.as_raw_fd() as u32);
        put_u32(&mut attr, 4, info.len() as u32);
        put_u64(&mut attr, 8, info.as_mut_ptr() as u64);
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        let name = &info[64..80];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        Ok((String::from_utf8_lossy(&name[..end]).into_owned(), map_id))
    }
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
            // The stack answers a TTL that runs out (ICMP time exceeded).
            insn(LDX_B, 4, 7, 22, 0),
            insn(JLE_IMM, 4, 0, PASS, 1),
        ]);
    }
    p.extend([insn(LDX_W, 4, 7, 30, 0), insn(STX_W, 10, 4, -4, 0)]);
    p
}

/// The map lookup of the key on the stack: r0 the value, or pass.
fn lookup(map_fd: RawFd) -> [Insn; 6] {
    [
        insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_REG, 2, 10, 0, 0),
        insn(ADD64_IMM, 2, 0, 0, -4),
        insn(CALL, 0, 0, 0, FUNC_MAP_LOOKUP_ELEM),
        insn(JEQ_IMM, 0, 0, PASS, 0),
    ]
}

/// `bpf_redirect_peer` to the value's host end, the program's verdict.
const DELIVER: [Insn; 4] = [
    insn(LDX_W, 1, 0, 0, 0),
    insn(MOV64_IMM, 2, 0, 0, 0),
    insn(CALL, 0, 0, 0, FUNC_REDIRECT_PEER),
    insn(EXIT, 0, 0, 0, 0),
];

/// Placeholder offset of the jumps to the pass exit, which [`finish`]
/// patches.
const PASS: i16 = 0;

/// Appends the pass exit (TC_ACT_UNSPEC) and points every conditional jump
/// at it: each program's jumps all mean "not for the shortcut".
fn finish(mut p: Vec<Insn>) -> Vec<Insn> {
    let pass = p.len();
    p.push(insn(MOV64_IMM, 0, 0, 0, TC_ACT_UNSPEC));
    p.push(insn(EXIT, 0, 0, 0, 0));
    for (i, ins) in p.iter_mut().enumerate().take(pass) {
        let jump = matches!(ins.code, JGT_REG | JNE_IMM | JNE_REG | JEQ_IMM | JLE_IMM);
        if jump {
            // Counted from the next instruction.
            ins.off = (pass - i - 1) as i16;
        }
    }
    p
}

/// The program at the host ends, with `map_fd` in its map load: a frame
/// for a container's address and MAC goes to that container.
fn program(map_fd: RawFd) -> Vec<Insn> {
    let mut p = head(false);
    p.extend(lookup(map_fd));
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
    finish(p)
}

/// The routed program: a packet for a container's address is forwarded to
/// it as the host would, with its TTL decremented (and the header checksum
/// updated incrementally, RFC 1624), the container's MAC as destination
/// and `gateway` (the bridge's) as source.
fn routed_program(map_fd: RawFd, gateway: [u8; 6]) -> Vec<Insn> {
    let word = |b: &[u8]| i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let half = |b: &[u8]| i32::from(u16::from_le_bytes([b[0], b[1]]));
    let mut p = head(true);
    p.extend(lookup(map_fd));
    p.extend([
        // Destination MAC: the container's.
        insn(LDX_W, 1, 0, 4, 0),
        insn(STX_W, 7, 1, 0, 0),
        insn(LDX_H, 1, 0, 8, 0),
        insn(STX_H, 7, 1, 4, 0),
        // Source MAC: the gateway's.
        insn(MOV32_IMM, 1, 0, 0, word(&gateway[..4])),
        insn(STX_W, 7, 1, 6, 0),
        insn(MOV32_IMM, 1, 0, 0, half(&gateway[4..])),
        insn(STX_H, 7, 1, 10, 0),
        // TTL - 1.
        insn(LDX_B, 1, 7, 22, 0),
        insn(ADD64_IMM, 1, 0, 0, -1),
        insn(STX_B, 7, 1, 22, 0),
        // Checksum + htons(0x0100) with the end-around carry, as the
        // kernel's ip_decrease_ttl (the halfword is read little-endian).
        insn(LDX_H, 1, 7, 24, 0),
        insn(ADD64_IMM, 1, 0, 0, 1),
        insn(JLT_IMM, 1, 0, 1, 0xffff),
        insn(ADD64_IMM, 1, 0, 0, 1),
        insn(STX_H, 7, 1, 24, 0),
    ]);
    p.extend(DELIVER);
    finish(p)
}

/// The network's program and map, found through the filter on its bridge
/// (which also keeps them alive while the network has no container), or
/// made and put there.
fn of_bridge(host: &mut Rtnl, bridge: u32) -> io::Result<(Program, Map)> {
    if let Some(id) = host.ingress_program(bridge, PROG_NAME)? {
        if let Ok(prog) = Program::by_id(id) {
            let map = Map::of_program(&prog)?;
            return Ok((prog, map));
        }
    }
    let map = Map::create()?;
    let prog = Program::load(&map)?;
    host.attach_ingress_program(bridge, prog.fd(), PROG_NAME)?;
    Ok((prog, map))
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
    let gateway = bridge
        .mac
        .as_deref()
        .and_then(|m| <[u8; 6]>::try_from(m).ok())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EADDRNOTAVAIL))?;
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
    let Some(id) = host.ingress_program(bridge, PROG_NAME)? else {
        return Ok(());
    };
    let Ok(prog) = Program::by_id(id) else {
        return Ok(());
    };
    Map::of_program(&prog)?.remove(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_the_pass_exit() {
        for p in [program(3), routed_program(3, [2, 0, 0, 0, 0, 1])] {
            let pass = p.len() - 2;
            for (i, ins) in p.iter().enumerate() {
                if matches!(ins.code, JGT_REG | JNE_IMM | JNE_REG | JEQ_IMM | JLE_IMM) {
                    assert_eq!(i + 1 + ins.off as usize, pass, "jump at {i}");
                }
            }
            assert_eq!(p[pass].imm, TC_ACT_UNSPEC);
        }
    }

    #[test]
    fn the_checksum_carry_skips_one_instruction() {
        let p = routed_program(3, [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
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
