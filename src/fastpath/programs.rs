//! The fast path's programs, assembled (see `super` for what each does).
//! Registers: r6 the context (`struct __sk_buff`), r7 the frame's first
//! byte, r8 a map value that must outlive a helper call. The stack holds
//! the lookup keys: the IPv4 destination at r10 - 4, an LPM key (prefix
//! length 32 and that address) at r10 - 8, and a `struct bpf_redir_neigh`
//! at r10 - 28.

use std::os::fd::RawFd;

use super::asm::*;
use super::bpf::hop;

const BPF_PSEUDO_MAP_FD: u8 = 1;

// Helpers.
const FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const FUNC_MAP_UPDATE_ELEM: i32 = 2;
const FUNC_SKB_STORE_BYTES: i32 = 9;
const FUNC_L3_CSUM_REPLACE: i32 = 10;
const FUNC_L4_CSUM_REPLACE: i32 = 11;
const FUNC_FIB_LOOKUP: i32 = 69;
const FUNC_GET_PRANDOM_U32: i32 = 7;
const FUNC_CSUM_DIFF: i32 = 28;
const FUNC_GET_HASH_RECALC: i32 = 34;
const FUNC_SKB_ADJUST_ROOM: i32 = 50;
const FUNC_REDIRECT_NEIGH: i32 = 152;
const FUNC_REDIRECT_PEER: i32 = 155;

/// AF_INET, as `struct bpf_redir_neigh` wants the next hop's family.
const AF_INET: i32 = 2;

// bpf_l4_csum_replace flags: the field is in the pseudo-header; a UDP
// checksum of 0 (none) stays 0.
const F_PSEUDO_HDR: i32 = 1 << 4;
const F_MARK_MANGLED_0: i32 = 1 << 5;

/// bpf_fib_lookup's answer for a destination this host does not forward:
/// one of its own addresses (or a broadcast).
const FIB_NOT_FORWARDED: i32 = 4;

// struct __sk_buff offsets.
const SKB_LEN: i16 = 0;
const SKB_INGRESS_IFINDEX: i16 = 36;
const SKB_PKT_TYPE: i16 = 4;
const SKB_VLAN_PRESENT: i16 = 20;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

/// Where an IPv4 header starts in a plain Ethernet frame.
const IP: i16 = 14;
/// What VXLAN puts in front of a frame: outer IPv4 (20), UDP (8), VXLAN
/// (8) and the inner Ethernet header (14).
const VXLAN_OVERHEAD: i32 = 50;
/// Where the inner IPv4 header starts in a VXLAN frame.
const INNER_IP: i16 = IP + VXLAN_OVERHEAD as i16;
/// The VXLAN UDP port (the Linux kernel's and Flannel's), as the halfword
/// a little-endian load of the big-endian port reads.
const VXLAN_PORT_LE: i32 = (super::VXLAN_PORT.to_be()) as i32;

// bpf_skb_adjust_room.
const ADJ_ROOM_MAC: i32 = 1;
const ADJ_ROOM_FIXED_GSO: u64 = 1 << 0;
const ADJ_ROOM_ENCAP_L3_IPV4: u64 = 1 << 1;
const ADJ_ROOM_ENCAP_L4_UDP: u64 = 1 << 4;
const ADJ_ROOM_ENCAP_L2_ETH: u64 = 1 << 6;
const fn adj_room_encap_l2(len: u64) -> u64 {
    (len & 0xff) << 56
}

/// The gateway MAC check's register loads: the word and the halfword a
/// little-endian load of `mac` reads.
fn mac_words(mac: [u8; 6]) -> (i32, i32) {
    (
        i32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
        i32::from(u16::from_le_bytes([mac[4], mac[5]])),
    )
}

/// r7 = the frame, with its first `need` bytes in reach; else to `short`.
fn frame(a: &mut Asm, need: i32, short: Label) {
    a.ops(&[
        insn(LDX_W, 7, 6, SKB_DATA, 0),
        insn(LDX_W, 3, 6, SKB_DATA_END, 0),
        insn(MOV64_REG, 4, 7, 0, 0),
        insn(ADD64_IMM, 4, 0, 0, need),
    ])
    .jump(JGT_REG, 4, 3, 0, short);
}

/// Passes all but IPv4 frames (EtherType 0x0800 read little-endian) whose
/// first `need` bytes are in reach.
fn ipv4_frame(a: &mut Asm, need: i32) {
    a.op(insn(MOV64_REG, 6, 1, 0, 0));
    frame(a, need, Label::Pass);
    a.op(insn(LDX_H, 4, 7, 12, 0))
        .jump(JNE_IMM, 4, 0, 0x0008, Label::Pass);
}

/// Passes frames not addressed to this device (PACKET_HOST), and
/// VLAN-tagged ones (at tc ingress the tag is in the skb, not the frame):
/// they belong to a VLAN device.
fn for_this_host(a: &mut Asm) {
    a.op(insn(LDX_W, 4, 6, SKB_PKT_TYPE, 0))
        .jump(JNE_IMM, 4, 0, 0, Label::Pass)
        .op(insn(LDX_W, 4, 6, SKB_VLAN_PRESENT, 0))
        .jump(JNE_IMM, 4, 0, 0, Label::Pass);
}

/// Passes a packet (its IPv4 header at `ip`) whose TTL would run out here:
/// the stack answers it (ICMP time exceeded).
fn ttl_left(a: &mut Asm, ip: i16) {
    a.op(insn(LDX_B, 4, 7, ip + 8, 0))
        .jump(JLE_IMM, 4, 0, 1, Label::Pass);
}

/// The destination address of the IPv4 header at `ip`, to r10 - 4.
fn destination_key(a: &mut Asm, ip: i16) {
    a.op(insn(LDX_W, 4, 7, ip + 16, 0))
        .op(insn(STX_W, 10, 4, -4, 0));
}

/// The lookup in map `map_fd` of the key at r10 + `key`: r0 the value, or
/// a jump to `missed`.
fn lookup(a: &mut Asm, map_fd: RawFd, key: i32, missed: Label) {
    a.ops(&[
        insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_REG, 2, 10, 0, 0),
        insn(ADD64_IMM, 2, 0, 0, key),
        insn(CALL, 0, 0, 0, FUNC_MAP_LOOKUP_ELEM),
    ])
    .jump(JEQ_IMM, 0, 0, 0, missed);
}

/// `bpf_redirect_peer` to the host end in the container map value at r0:
/// the program's verdict.
fn deliver(a: &mut Asm) {
    a.ops(&[
        insn(LDX_W, 1, 0, 0, 0),
        insn(MOV64_IMM, 2, 0, 0, 0),
        insn(CALL, 0, 0, 0, FUNC_REDIRECT_PEER),
        insn(EXIT, 0, 0, 0, 0),
    ]);
}

/// TTL − 1 in the IPv4 header at `ip`, with the header checksum +
/// htons(0x0100) and the end-around carry, as the kernel's
/// ip_decrease_ttl (the halfword is read little-endian). Uses r1 only.
fn decrement_ttl(a: &mut Asm, ip: i16) {
    a.ops(&[
        insn(LDX_B, 1, 7, ip + 8, 0),
        insn(ADD64_IMM, 1, 0, 0, -1),
        insn(STX_B, 7, 1, ip + 8, 0),
        insn(LDX_H, 1, 7, ip + 10, 0),
        insn(ADD64_IMM, 1, 0, 0, 1),
        // Skip the carry unless the sum overflowed 16 bits' worth.
        insn(JLT_IMM, 1, 0, 1, 0xffff),
        insn(ADD64_IMM, 1, 0, 0, 1),
        insn(STX_H, 7, 1, ip + 10, 0),
    ]);
}

/// Copies the 6-byte MAC at r`from` + `at` into the frame at `to`.
fn copy_mac(a: &mut Asm, from: u8, at: i16, to: i16) {
    a.ops(&[
        insn(LDX_W, 1, from, at, 0),
        insn(STX_W, 7, 1, to, 0),
        insn(LDX_H, 1, from, at + 4, 0),
        insn(STX_H, 7, 1, to + 4, 0),
    ]);
}

/// Rewrites the frame's MACs: the destination from the container map value
/// at r0, the source `gateway`.
fn to_container(a: &mut Asm, gateway: [u8; 6]) {
    let (gw_word, gw_half) = mac_words(gateway);
    copy_mac(a, 0, 4, 0);
    a.ops(&[
        insn(MOV32_IMM, 1, 0, 0, gw_word),
        insn(STX_W, 7, 1, 6, 0),
        insn(MOV32_IMM, 1, 0, 0, gw_half),
        insn(STX_H, 7, 1, 10, 0),
    ]);
}

/// How `bpf_redirect_neigh` finds the next hop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NextHop {
    /// The routes value's own (host-gw: the peer, on the same segment).
    Given,
    /// The kernel's route to the packet's destination, bound to the
    /// device: for an encapsulated packet, whose outer destination (the
    /// peer) may be routers away.
    Routed,
}

/// `bpf_redirect_neigh` out of the device of the routes value at r`value`,
/// toward the next hop `next_hop` says: the program's verdict.
fn leave_through(a: &mut Asm, value: u8, next_hop: NextHop) {
    if next_hop == NextHop::Given {
        a.ops(&[
            // struct bpf_redir_neigh at r10 - 28: family, next hop, zeros.
            insn(MOV64_IMM, 1, 0, 0, AF_INET),
            insn(STX_W, 10, 1, -28, 0),
            insn(LDX_W, 1, value, hop::NEXT_HOP, 0),
            insn(STX_W, 10, 1, -24, 0),
            insn(MOV64_IMM, 1, 0, 0, 0),
            insn(STX_W, 10, 1, -20, 0),
            insn(STX_W, 10, 1, -16, 0),
            insn(STX_W, 10, 1, -12, 0),
            insn(MOV64_REG, 2, 10, 0, 0),
            insn(ADD64_IMM, 2, 0, 0, -28),
            insn(MOV64_IMM, 3, 0, 0, 20),
        ]);
    } else {
        a.ops(&[insn(MOV64_IMM, 2, 0, 0, 0), insn(MOV64_IMM, 3, 0, 0, 0)]);
    }
    a.ops(&[
        insn(LDX_W, 1, value, hop::DEVICE, 0),
        insn(MOV64_IMM, 4, 0, 0, 0),
        insn(CALL, 0, 0, 0, FUNC_REDIRECT_NEIGH),
        insn(EXIT, 0, 0, 0, 0),
    ]);
}

/// Stores halfword `len` (r1, host order) big-endian at `at`.
fn store_be16(a: &mut Asm, at: i16) {
    a.op(insn(TO_BE, 1, 0, 0, 16)).op(insn(STX_H, 7, 1, at, 0));
}

/// VXLAN encapsulation of the frame, for the routes value at r0, then out
/// toward the peer. The frame keeps its Ethernet header in front (the
/// neighbour code rewrites it); behind it come the outer IPv4, UDP and
/// VXLAN headers and the inner Ethernet header, from one VTEP to the
/// other. Too long a frame, or one the kernel will not grow, passes
/// unchanged (the VXLAN device takes it).
fn vxlan_encap(a: &mut Asm) {
    let flags = ADJ_ROOM_FIXED_GSO
        | ADJ_ROOM_ENCAP_L3_IPV4
        | ADJ_ROOM_ENCAP_L4_UDP
        | ADJ_ROOM_ENCAP_L2_ETH
        | adj_room_encap_l2(14);
    // The outer IPv4 length must fit its 16 bits.
    a.op(insn(MOV64_REG, 8, 0, 0, 0))
        .op(insn(LDX_W, 1, 6, SKB_LEN, 0))
        .jump(
            JGT_IMM,
            1,
            0,
            0xffff + IP as i32 - VXLAN_OVERHEAD,
            Label::Pass,
        )
        // UDP source port: 49152 + 14 bits of the flow's hash (entropy for
        // the underlay's ECMP and RSS, as the kernel's VXLAN gives), taken
        // while the headers are still the inner packet's.
        .ops(&[
            insn(MOV64_REG, 1, 6, 0, 0),
            insn(CALL, 0, 0, 0, FUNC_GET_HASH_RECALC),
            insn(AND64_IMM, 0, 0, 0, 0x3fff),
            insn(OR64_IMM, 0, 0, 0, 0xc000),
            insn(TO_BE, 0, 0, 0, 16),
            insn(MOV64_REG, 9, 0, 0, 0),
        ])
        .ops(&[
            insn(MOV64_REG, 1, 6, 0, 0),
            insn(MOV64_IMM, 2, 0, 0, VXLAN_OVERHEAD),
            insn(MOV64_IMM, 3, 0, 0, ADJ_ROOM_MAC),
            insn(LD_IMM64, 4, 0, 0, flags as u32 as i32),
            insn(0, 0, 0, 0, (flags >> 32) as u32 as i32),
            insn(CALL, 0, 0, 0, FUNC_SKB_ADJUST_ROOM),
        ])
        .jump(JNE_IMM, 0, 0, 0, Label::Pass);
    // Grown: from here on the frame is only good encapsulated.
    frame(a, INNER_IP as i32 + 20, Label::Drop);
    a.op(insn(STX_H, 7, 9, IP + 20, 0));
    // Outer IPv4: version 4, IHL 5, TOS 0.
    a.op(insn(MOV32_IMM, 1, 0, 0, 0x0045))
        .op(insn(STX_H, 7, 1, IP, 0));
    // Total length: the frame less the outer Ethernet header.
    a.op(insn(LDX_W, 1, 6, SKB_LEN, 0))
        .op(insn(ADD64_IMM, 1, 0, 0, -(IP as i32)));
    store_be16(a, IP + 2);
    a.ops(&[
        // Fragment offset 0 and DF clear, as the kernel's VXLAN sends (a
        // router may fragment; the kernel reassembles and decapsulates),
        // so the identification must tell packets apart: a random one.
        insn(MOV64_IMM, 1, 0, 0, 0),
        insn(STX_W, 7, 1, IP + 4, 0),
        insn(CALL, 0, 0, 0, FUNC_GET_PRANDOM_U32),
        insn(STX_H, 7, 0, IP + 4, 0),
        // TTL 64, protocol UDP (17), checksum 0 until computed.
        insn(MOV32_IMM, 1, 0, 0, 0x1140),
        insn(STX_H, 7, 1, IP + 8, 0),
        insn(MOV64_IMM, 1, 0, 0, 0),
        insn(STX_H, 7, 1, IP + 10, 0),
        insn(LDX_W, 1, 8, hop::LOCAL, 0),
        insn(STX_W, 7, 1, IP + 12, 0),
        insn(LDX_W, 1, 8, hop::NEXT_HOP, 0),
        insn(STX_W, 7, 1, IP + 16, 0),
        // UDP: destination port, length, checksum 0 (allowed over IPv4,
        // and what the kernel's VXLAN accepts).
        insn(MOV32_IMM, 1, 0, 0, VXLAN_PORT_LE),
        insn(STX_H, 7, 1, IP + 22, 0),
        insn(LDX_W, 1, 6, SKB_LEN, 0),
        insn(ADD64_IMM, 1, 0, 0, -(IP as i32 + 20)),
    ]);
    store_be16(a, IP + 24);
    a.ops(&[
        insn(MOV64_IMM, 1, 0, 0, 0),
        insn(STX_H, 7, 1, IP + 26, 0),
        // VXLAN: flags (VNI valid), then the VNI.
        insn(MOV32_IMM, 1, 0, 0, 0x08),
        insn(STX_W, 7, 1, IP + 28, 0),
        insn(LDX_W, 1, 8, hop::VNI, 0),
        insn(STX_W, 7, 1, IP + 32, 0),
    ]);
    // Inner Ethernet: peer VTEP ← this VTEP, IPv4.
    copy_mac(a, 8, hop::PEER_MAC, IP + 36);
    copy_mac(a, 8, hop::LOCAL_MAC, IP + 42);
    a.ops(&[
        insn(MOV32_IMM, 1, 0, 0, 0x0008),
        insn(STX_H, 7, 1, IP + 48, 0),
        // The outer header's checksum: the ones' complement sum of its
        // halfwords (bpf_csum_diff), folded to 16 bits and inverted.
        insn(MOV64_IMM, 1, 0, 0, 0),
        insn(MOV64_IMM, 2, 0, 0, 0),
        insn(MOV64_REG, 3, 7, 0, 0),
        insn(ADD64_IMM, 3, 0, 0, IP as i32),
        insn(MOV64_IMM, 4, 0, 0, 20),
        insn(MOV64_IMM, 5, 0, 0, 0),
        insn(CALL, 0, 0, 0, FUNC_CSUM_DIFF),
    ]);
    // Two end-around carries: the first can itself carry once more.
    for _ in 0..2 {
        a.ops(&[
            insn(MOV64_REG, 1, 0, 0, 0),
            insn(RSH64_IMM, 1, 0, 0, 16),
            insn(AND64_IMM, 0, 0, 0, 0xffff),
            insn(ADD64_REG, 0, 1, 0, 0),
        ]);
    }
    a.ops(&[
        insn(XOR64_IMM, 0, 0, 0, 0xffff),
        insn(STX_H, 7, 0, IP + 10, 0),
    ]);
    // This host routes the inner packet: its TTL goes down by one.
    decrement_ttl(a, INNER_IP);
    leave_through(a, 8, NextHop::Routed);
}

// The published-port path's stack: the ports key at r10 - 64 (host
// address, port, protocol, 0), the flow key at r10 - 80 (container
// address, client address, container port, client port, protocol, 0 0 0),
// the flow value at r10 - 96 (host address, host port, 0 0, device), the
// device to redirect to at r10 - 100, and a struct bpf_fib_lookup at
// r10 - 164.
const PORT_KEY: i16 = -64;
const FLOW_KEY: i16 = -80;
const FLOW_VALUE: i16 = -96;
const REDIRECT_TO: i16 = -100;
const FIB: i16 = -164;

/// Passes all but unfragmented IPv4 TCP and UDP without IP options (the
/// IPv4 header at `IP`). `to` is where the others go.
fn tcp_or_udp(a: &mut Asm, to: Label) {
    a.op(insn(LDX_B, 4, 7, IP, 0))
        .jump(JNE_IMM, 4, 0, 0x45, to)
        .op(insn(LDX_H, 4, 7, IP + 6, 0))
        .op(insn(AND64_IMM, 4, 0, 0, 0xff3f))
        .jump(JNE_IMM, 4, 0, 0, to)
        .op(insn(LDX_B, 4, 7, IP + 8, 0))
        .jump(JLE_IMM, 4, 0, 1, to)
        .op(insn(LDX_B, 4, 7, IP + 9, 0))
        // TCP (6) goes on past the next jump.
        .op(insn(JEQ_IMM, 4, 0, 1, 6))
        .jump(JNE_IMM, 4, 0, 17, to);
}

/// Network address translation of the packet: the address at `addr_at`
/// and the port at `port_at` (in the frame) from the values at r10 +
/// `old_addr`/`old_port` to those at r10 + `new_addr`/`new_port`, with the
/// IPv4 and TCP/UDP checksums, through the kernel's helpers (which know
/// how the checksums are offloaded). The protocol is the flow key's.
/// Packet pointers are invalid afterwards.
fn translate(a: &mut Asm, (addr_at, port_at): (i16, i16), old: (i16, i16), new: (i16, i16)) {
    let (old_addr, old_port) = old;
    let (new_addr, new_port) = new;
    a.ops(&[
        // r9: the L4 checksum's offset, r8: the extra flags, for TCP; then
        // for UDP.
        insn(LDX_B, 1, 10, FLOW_KEY + 12, 0),
        insn(MOV64_IMM, 9, 0, 0, IP as i32 + 20 + 16),
        insn(MOV64_IMM, 8, 0, 0, 0),
        insn(JNE_IMM, 1, 0, 2, 17),
        insn(MOV64_IMM, 9, 0, 0, IP as i32 + 20 + 6),
        insn(MOV64_IMM, 8, 0, 0, F_MARK_MANGLED_0),
        // The address, in the pseudo-header.
        insn(MOV64_REG, 1, 6, 0, 0),
        insn(MOV64_REG, 2, 9, 0, 0),
        insn(LDX_W, 3, 10, old_addr, 0),
        insn(LDX_W, 4, 10, new_addr, 0),
        insn(MOV64_IMM, 5, 0, 0, F_PSEUDO_HDR | 4),
        insn(OR64_REG, 5, 8, 0, 0),
        insn(CALL, 0, 0, 0, FUNC_L4_CSUM_REPLACE),
        // The port.
        insn(MOV64_REG, 1, 6, 0, 0),
        insn(MOV64_REG, 2, 9, 0, 0),
        insn(LDX_H, 3, 10, old_port, 0),
        insn(LDX_H, 4, 10, new_port, 0),
        insn(MOV64_IMM, 5, 0, 0, 2),
        insn(OR64_REG, 5, 8, 0, 0),
        insn(CALL, 0, 0, 0, FUNC_L4_CSUM_REPLACE),
        // The IPv4 header's checksum.
        insn(MOV64_REG, 1, 6, 0, 0),
        insn(MOV64_IMM, 2, 0, 0, IP as i32 + 10),
        insn(LDX_W, 3, 10, old_addr, 0),
        insn(LDX_W, 4, 10, new_addr, 0),
        insn(MOV64_IMM, 5, 0, 0, 4),
        insn(CALL, 0, 0, 0, FUNC_L3_CSUM_REPLACE),
    ]);
    // The fields themselves.
    store_from_stack(a, addr_at, new_addr, 4);
    store_from_stack(a, port_at, new_port, 2);
}

/// Where a key field comes from: (register, offset), the frame being r7
/// and the stack r10.
type Field = (u8, i16);

/// The flow key at r10 + FLOW_KEY: container address and port, client
/// address and port, each from where it says, and the frame's protocol.
/// Needs the frame in reach.
fn flow_key(a: &mut Asm, container: (Field, Field), client: (Field, Field)) {
    let ((caddr, cport), (addr, port)) = (container, client);
    a.ops(&[
        insn(LDX_W, 1, caddr.0, caddr.1, 0),
        insn(STX_W, 10, 1, FLOW_KEY, 0),
        insn(LDX_W, 1, addr.0, addr.1, 0),
        insn(STX_W, 10, 1, FLOW_KEY + 4, 0),
        insn(LDX_H, 1, cport.0, cport.1, 0),
        insn(STX_H, 10, 1, FLOW_KEY + 8, 0),
        insn(LDX_H, 1, port.0, port.1, 0),
        insn(STX_H, 10, 1, FLOW_KEY + 10, 0),
        insn(MOV64_IMM, 1, 0, 0, 0),
        insn(STX_W, 10, 1, FLOW_KEY + 12, 0),
        insn(LDX_B, 1, 7, IP + 9, 0),
        insn(STX_B, 10, 1, FLOW_KEY + 12, 0),
    ]);
}

/// The ports key at r10 + PORT_KEY: host address and port from where they
/// say, and the frame's protocol. Needs the frame in reach.
fn port_key(a: &mut Asm, addr: Field, port: Field) {
    a.ops(&[
        insn(LDX_W, 1, addr.0, addr.1, 0),
        insn(STX_W, 10, 1, PORT_KEY, 0),
        insn(MOV64_IMM, 1, 0, 0, 0),
        insn(STX_W, 10, 1, PORT_KEY + 4, 0),
        insn(LDX_H, 1, port.0, port.1, 0),
        insn(STX_H, 10, 1, PORT_KEY + 4, 0),
        insn(LDX_B, 1, 7, IP + 9, 0),
        insn(STX_B, 10, 1, PORT_KEY + 6, 0),
    ]);
}

/// `bpf_skb_store_bytes`: the `len` bytes at r10 + `from` to the frame at
/// `at`.
fn store_from_stack(a: &mut Asm, at: i16, from: i16, len: i32) {
    a.ops(&[
        insn(MOV64_REG, 1, 6, 0, 0),
        insn(MOV64_IMM, 2, 0, 0, at as i32),
        insn(MOV64_REG, 3, 10, 0, 0),
        insn(ADD64_IMM, 3, 0, 0, from as i32),
        insn(MOV64_IMM, 4, 0, 0, len),
        insn(MOV64_IMM, 5, 0, 0, 0),
        insn(CALL, 0, 0, 0, FUNC_SKB_STORE_BYTES),
    ]);
}

/// The reply side of a published port, at the head of the bridge program:
/// a TCP or UDP packet a container sends to the gateway's MAC that
/// belongs to a connection the publish program let in (its flow) leaves
/// with the host's address and port as its source, TTL − 1, out of the
/// device the connection came in on, toward the client (the kernel's
/// route and neighbour give the MACs). Anything else goes to `next`.
fn published_reply(
    a: &mut Asm,
    (ports_fd, flows_fd): (RawFd, RawFd),
    gateway: [u8; 6],
    next: Label,
) {
    let (gw_word, gw_half) = mac_words(gateway);
    a.ops(&[insn(LDX_W, 1, 7, 0, 0), insn(MOV32_IMM, 2, 0, 0, gw_word)])
        .jump(JNE_REG, 1, 2, 0, next)
        .ops(&[insn(LDX_H, 1, 7, 4, 0), insn(MOV32_IMM, 2, 0, 0, gw_half)])
        .jump(JNE_REG, 1, 2, 0, next);
    tcp_or_udp(a, next);
    // The container is the source, the client the destination.
    flow_key(
        a,
        ((7, IP + 12), (7, IP + 20)),
        ((7, IP + 16), (7, IP + 22)),
    );
    lookup(a, flows_fd, FLOW_KEY as i32, next);
    a.ops(&[
        insn(LDX_W, 1, 0, 0, 0),
        insn(STX_W, 10, 1, FLOW_VALUE, 0),
        insn(LDX_W, 1, 0, 4, 0),
        insn(STX_W, 10, 1, FLOW_VALUE + 4, 0),
        insn(LDX_W, 1, 0, 8, 0),
        insn(STX_W, 10, 1, REDIRECT_TO, 0),
    ]);
    // Still published, to this container and port: (host address, port,
    // protocol), or (every address, port, protocol).
    port_key(a, (10, FLOW_VALUE), (10, FLOW_VALUE + 4));
    lookup(a, ports_fd, PORT_KEY as i32, Label::At("reply_any"));
    a.jump(JA, 0, 0, 0, Label::At("reply_check"));
    a.here("reply_any")
        .ops(&[insn(MOV64_IMM, 1, 0, 0, 0), insn(STX_W, 10, 1, PORT_KEY, 0)]);
    lookup(a, ports_fd, PORT_KEY as i32, next);
    a.here("reply_check")
        .ops(&[insn(LDX_W, 1, 0, 0, 0), insn(LDX_W, 2, 10, FLOW_KEY, 0)])
        .jump(JNE_REG, 1, 2, 0, next)
        .ops(&[insn(LDX_H, 1, 0, 4, 0), insn(LDX_H, 2, 10, FLOW_KEY + 8, 0)])
        .jump(JNE_REG, 1, 2, 0, next);
    decrement_ttl(a, IP);
    translate(
        a,
        (IP + 12, IP + 20),
        (FLOW_KEY, FLOW_KEY + 8),
        (FLOW_VALUE, FLOW_VALUE + 4),
    );
    a.ops(&[
        insn(LDX_W, 1, 10, REDIRECT_TO, 0),
        insn(MOV64_IMM, 2, 0, 0, 0),
        insn(MOV64_IMM, 3, 0, 0, 0),
        insn(MOV64_IMM, 4, 0, 0, 0),
        insn(CALL, 0, 0, 0, FUNC_REDIRECT_NEIGH),
        insn(EXIT, 0, 0, 0, 0),
    ]);
}

/// The publish program, at the ingress of the host's uplink, over the
/// network's ports (`ports_fd`), flows (`flows_fd`) and containers
/// (`map_fd`): an unfragmented TCP or UDP packet for this host's MAC, to
/// a published (host address, port) — the address one of this host's when
/// the port is published on every address — and a container on the fast
/// path, is let in as the host's DNAT and forwarding would: its flow is
/// remembered for the reply, its destination becomes the container's
/// address and port, TTL − 1, the container's MAC ← the gateway's, and it
/// goes straight into the container's namespace. Anything else passes.
pub fn publish_program(
    ports_fd: RawFd,
    flows_fd: RawFd,
    map_fd: RawFd,
    gateway: [u8; 6],
) -> Vec<Insn> {
    let mut a = Asm::default();
    ipv4_frame(&mut a, IP as i32 + 24);
    for_this_host(&mut a);
    tcp_or_udp(&mut a, Label::Pass);
    port_key(&mut a, (7, IP + 16), (7, IP + 22));
    lookup(&mut a, ports_fd, PORT_KEY as i32, Label::At("any"));
    a.op(insn(MOV64_REG, 8, 0, 0, 0))
        .jump(JA, 0, 0, 0, Label::At("found"));
    // Published on every address: the destination must be one of this
    // host's (as the firewall's `fib daddr type local`).
    a.here("any")
        .ops(&[insn(MOV64_IMM, 1, 0, 0, 0), insn(STX_W, 10, 1, PORT_KEY, 0)]);
    lookup(&mut a, ports_fd, PORT_KEY as i32, Label::Pass);
    a.op(insn(MOV64_REG, 8, 0, 0, 0));
    a.op(insn(MOV64_IMM, 1, 0, 0, 0));
    for off in (0..64).step_by(4) {
        a.op(insn(STX_W, 10, 1, FIB + off, 0));
    }
    a.ops(&[
        insn(MOV64_IMM, 1, 0, 0, AF_INET),
        insn(STX_B, 10, 1, FIB, 0),
        insn(LDX_W, 1, 6, SKB_INGRESS_IFINDEX, 0),
        insn(STX_W, 10, 1, FIB + 8, 0),
        insn(LDX_W, 1, 7, IP + 12, 0),
        insn(STX_W, 10, 1, FIB + 16, 0),
        insn(LDX_W, 1, 7, IP + 16, 0),
        insn(STX_W, 10, 1, FIB + 32, 0),
        insn(MOV64_REG, 1, 6, 0, 0),
        insn(MOV64_REG, 2, 10, 0, 0),
        insn(ADD64_IMM, 2, 0, 0, FIB as i32),
        insn(MOV64_IMM, 3, 0, 0, 64),
        insn(MOV64_IMM, 4, 0, 0, 0),
        insn(CALL, 0, 0, 0, FUNC_FIB_LOOKUP),
    ])
    .jump(JNE_IMM, 0, 0, FIB_NOT_FORWARDED, Label::Pass);
    // The fib lookup may have moved the frame: reach it again.
    frame(&mut a, IP as i32 + 24, Label::Pass);

    // The flow: container address and port from the ports value (r8), the
    // client's from the packet; the container's address is also the
    // container map's key.
    a.here("found");
    flow_key(&mut a, ((8, 0), (8, 4)), ((7, IP + 12), (7, IP + 20)));
    a.ops(&[
        insn(LDX_W, 1, 10, FLOW_KEY, 0),
        insn(STX_W, 10, 1, -4, 0),
        insn(LDX_W, 1, 7, IP + 16, 0),
        insn(STX_W, 10, 1, FLOW_VALUE, 0),
        insn(MOV64_IMM, 1, 0, 0, 0),
        insn(STX_W, 10, 1, FLOW_VALUE + 4, 0),
        insn(LDX_H, 1, 7, IP + 22, 0),
        insn(STX_H, 10, 1, FLOW_VALUE + 4, 0),
        insn(LDX_W, 1, 6, SKB_INGRESS_IFINDEX, 0),
        insn(STX_W, 10, 1, FLOW_VALUE + 8, 0),
    ]);
    // Only to a container on the fast path.
    lookup(&mut a, map_fd, -4, Label::Pass);
    a.op(insn(LDX_W, 1, 0, 0, 0))
        .op(insn(STX_W, 10, 1, REDIRECT_TO, 0));
    to_container(&mut a, gateway);
    decrement_ttl(&mut a, IP);
    a.ops(&[
        insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, flows_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_REG, 2, 10, 0, 0),
        insn(ADD64_IMM, 2, 0, 0, FLOW_KEY as i32),
        insn(MOV64_REG, 3, 10, 0, 0),
        insn(ADD64_IMM, 3, 0, 0, FLOW_VALUE as i32),
        insn(MOV64_IMM, 4, 0, 0, 0),
        insn(CALL, 0, 0, 0, FUNC_MAP_UPDATE_ELEM),
    ]);
    translate(
        &mut a,
        (IP + 16, IP + 22),
        (FLOW_VALUE, FLOW_VALUE + 4),
        (FLOW_KEY, FLOW_KEY + 8),
    );
    a.ops(&[
        insn(LDX_W, 1, 10, REDIRECT_TO, 0),
        insn(MOV64_IMM, 2, 0, 0, 0),
        insn(CALL, 0, 0, 0, FUNC_REDIRECT_PEER),
        insn(EXIT, 0, 0, 0, 0),
    ]);
    a.finish()
}

/// The program at the host ends and the bridge, over the network's map of
/// containers (`map_fd`) and its routes (`routes_fd`), for a bridge whose
/// MAC is `gateway`:
/// - a reply through a published port leaves as [`published_reply`] says
///   (`published`: the network's ports and flows maps);
/// - a frame for a container's address and MAC goes to that container;
/// - else a frame to the gateway's MAC for an address in the routes, with
///   a TTL above 1, gets TTL − 1 and leaves toward the route's next hop,
///   VXLAN-encapsulated where the route says so;
/// - else it passes.
pub fn bridge_program(
    map_fd: RawFd,
    routes_fd: RawFd,
    published: (RawFd, RawFd),
    gateway: [u8; 6],
) -> Vec<Insn> {
    let (gw_word, gw_half) = mac_words(gateway);
    let mut a = Asm::default();
    ipv4_frame(&mut a, IP as i32 + 24);
    published_reply(&mut a, published, gateway, Label::At("container"));
    a.here("container");
    destination_key(&mut a, IP);
    lookup(&mut a, map_fd, -4, Label::At("route"));
    // Only a frame addressed to that container's MAC.
    a.ops(&[insn(LDX_W, 1, 7, 0, 0), insn(LDX_W, 2, 0, 4, 0)])
        .jump(JNE_REG, 1, 2, 0, Label::Pass)
        .ops(&[insn(LDX_H, 1, 7, 4, 0), insn(LDX_H, 2, 0, 8, 0)])
        .jump(JNE_REG, 1, 2, 0, Label::Pass);
    deliver(&mut a);

    a.here("route");
    // Routed by this host: sent to the gateway's MAC.
    a.ops(&[insn(LDX_W, 1, 7, 0, 0), insn(MOV32_IMM, 2, 0, 0, gw_word)])
        .jump(JNE_REG, 1, 2, 0, Label::Pass)
        .ops(&[insn(LDX_H, 1, 7, 4, 0), insn(MOV32_IMM, 2, 0, 0, gw_half)])
        .jump(JNE_REG, 1, 2, 0, Label::Pass);
    ttl_left(&mut a, IP);
    // The LPM key: prefix length 32, then the address already at r10 - 4.
    a.ops(&[insn(MOV64_IMM, 1, 0, 0, 32), insn(STX_W, 10, 1, -8, 0)]);
    lookup(&mut a, routes_fd, -8, Label::Pass);
    a.op(insn(LDX_W, 1, 0, hop::KIND, 0))
        .jump(JEQ_IMM, 1, 0, hop::KIND_VXLAN, Label::At("vxlan"));
    decrement_ttl(&mut a, IP);
    leave_through(&mut a, 0, NextHop::Given);

    a.here("vxlan");
    vxlan_encap(&mut a);
    a.finish()
}

/// The routed program (host-gw arrivals): a packet for this host's MAC and
/// a container's address is forwarded to it as the host would, with its
/// TTL decremented, the container's MAC as destination and `gateway` (the
/// bridge's) as source.
pub fn routed_program(map_fd: RawFd, gateway: [u8; 6]) -> Vec<Insn> {
    let mut a = Asm::default();
    ipv4_frame(&mut a, IP as i32 + 20);
    for_this_host(&mut a);
    ttl_left(&mut a, IP);
    destination_key(&mut a, IP);
    lookup(&mut a, map_fd, -4, Label::Pass);
    to_container(&mut a, gateway);
    decrement_ttl(&mut a, IP);
    deliver(&mut a);
    a.finish()
}

/// The decapsulating program (vxlan arrivals): a VXLAN packet for this
/// host (UDP port 8472, unfragmented, network `vni`) whose inner IPv4
/// packet is for a container's address loses its outer headers and goes
/// to the container as [`routed_program`]'s packets do. Anything else
/// passes to the kernel's VXLAN device.
pub fn decap_program(map_fd: RawFd, gateway: [u8; 6], vni: u32) -> Vec<Insn> {
    let vni_word = i32::from_le_bytes((vni << 8).to_be_bytes());
    let mut a = Asm::default();
    ipv4_frame(&mut a, INNER_IP as i32 + 20);
    for_this_host(&mut a);
    a.op(insn(LDX_B, 4, 7, IP, 0))
        .jump(JNE_IMM, 4, 0, 0x45, Label::Pass)
        .op(insn(LDX_B, 4, 7, IP + 9, 0))
        .jump(JNE_IMM, 4, 0, 17, Label::Pass)
        // Not a fragment: MF clear and offset 0 (0x3fff, read
        // little-endian).
        .op(insn(LDX_H, 4, 7, IP + 6, 0))
        .op(insn(AND64_IMM, 4, 0, 0, 0xff3f))
        .jump(JNE_IMM, 4, 0, 0, Label::Pass)
        .op(insn(LDX_H, 4, 7, IP + 22, 0))
        .jump(JNE_IMM, 4, 0, VXLAN_PORT_LE, Label::Pass)
        .op(insn(LDX_B, 4, 7, IP + 28, 0))
        .jump(JNE_IMM, 4, 0, 0x08, Label::Pass)
        .op(insn(LDX_W, 4, 7, IP + 32, 0))
        .jump(JNE_IMM, 4, 0, vni_word, Label::Pass)
        .op(insn(LDX_H, 4, 7, IP + 48, 0))
        .jump(JNE_IMM, 4, 0, 0x0008, Label::Pass);
    ttl_left(&mut a, INNER_IP);
    destination_key(&mut a, INNER_IP);
    lookup(&mut a, map_fd, -4, Label::Pass);
    a.ops(&[
        insn(MOV64_REG, 8, 0, 0, 0),
        insn(MOV64_REG, 1, 6, 0, 0),
        insn(MOV64_IMM, 2, 0, 0, -VXLAN_OVERHEAD),
        insn(MOV64_IMM, 3, 0, 0, ADJ_ROOM_MAC),
        insn(MOV64_IMM, 4, 0, 0, ADJ_ROOM_FIXED_GSO as i32),
        insn(CALL, 0, 0, 0, FUNC_SKB_ADJUST_ROOM),
    ])
    .jump(JNE_IMM, 0, 0, 0, Label::Pass);
    // Shrunk: the frame is the inner packet behind the outer Ethernet
    // header.
    frame(&mut a, IP as i32 + 20, Label::Drop);
    a.op(insn(MOV64_REG, 0, 8, 0, 0));
    to_container(&mut a, gateway);
    decrement_ttl(&mut a, IP);
    deliver(&mut a);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn programs() -> Vec<Vec<Insn>> {
        vec![
            bridge_program(3, 4, (5, 6), GW),
            publish_program(5, 6, 3, GW),
            routed_program(3, GW),
            decap_program(3, GW, 1),
        ]
    }

    #[test]
    fn every_jump_lands_inside_its_program() {
        for p in programs() {
            for (i, ins) in p.iter().enumerate().filter(|(_, x)| is_jump(x.code)) {
                let to = i + 1 + ins.off as usize;
                assert!(ins.off >= 0 && to < p.len(), "jump at {i} to {to}");
            }
            assert!(p.iter().any(|x| x.imm == TC_ACT_UNSPEC));
        }
    }

    #[test]
    fn a_container_miss_goes_on_to_the_route_lookup() {
        let p = bridge_program(3, 4, (5, 6), GW);
        let all: Vec<usize> = (0..p.len()).filter(|&i| p[i].code == LD_IMM64).collect();
        // First the reply path's flows and ports maps; then the container
        // map, the routes map, the adjust_room flags.
        assert_eq!(
            all[..3].iter().map(|&i| p[i].imm).collect::<Vec<_>>(),
            [6, 5, 5]
        );
        let maps = &all[3..];
        assert_eq!((p[maps[0]].imm, p[maps[1]].imm), (3, 4));
        assert_eq!(p[maps[0]].src, BPF_PSEUDO_MAP_FD);
        assert_eq!(p[maps[2]].src, 0);
        // The null check after the first lookup jumps past the delivery,
        // to the gateway MAC check; the one after the second passes.
        let miss = maps[0] + 5;
        assert_eq!(p[miss].code, JEQ_IMM);
        let to = miss + 1 + p[miss].off as usize;
        assert_eq!((p[to].code, p[to + 1].code), (LDX_W, MOV32_IMM));
        assert_eq!(p[to + 1].imm, i32::from_le_bytes([2, 0, 0, 0]));
        let miss = maps[1] + 5;
        let to = miss + 1 + p[miss].off as usize;
        assert_eq!(p[to].imm, TC_ACT_UNSPEC);
        let neigh = p
            .iter()
            .filter(|x| x.code == CALL && x.imm == FUNC_REDIRECT_NEIGH)
            .count();
        assert_eq!(neigh, 3, "published replies, routed and encapsulated");
    }

    #[test]
    fn the_encapsulation_flags_name_udp_over_ipv4_with_an_inner_ethernet_header() {
        let p = bridge_program(3, 4, (5, 6), GW);
        let i = p
            .iter()
            .position(|x| x.code == LD_IMM64 && x.src == 0)
            .unwrap();
        let flags = (p[i].imm as u32 as u64) | ((p[i + 1].imm as u32 as u64) << 32);
        assert_eq!(flags, 0x0e00_0000_0000_0053);
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
    fn the_decapsulation_matches_the_port_and_network() {
        let p = decap_program(3, GW, 1);
        assert!(p
            .iter()
            .any(|x| x.code == JNE_IMM && x.imm == i32::from_le_bytes([0x21, 0x18, 0, 0])));
        assert!(p
            .iter()
            .any(|x| x.code == JNE_IMM && x.imm == i32::from_le_bytes([0, 0, 1, 0])));
    }
}
