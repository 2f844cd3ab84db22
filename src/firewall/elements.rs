//! Set and map elements over nfnetlink, in-process: the per-container path.
//!
//! Adding a published port is one batch of NEWSETELEM messages on a netlink
//! socket: no process, no ruleset dump, constant cost however many elements
//! the maps already hold.
//!
//! Element keys of concatenated types are laid out as the kernel's registers
//! hold them: every field padded to a multiple of 4 bytes, in network order.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;

/// One element: its key and, for maps, its data, already encoded.
pub struct RawElement {
    pub key: Vec<u8>,
    pub data: Option<Vec<u8>>,
}

/// Encodes an address for a key or data field.
pub fn addr(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Encodes an `inet_proto` field (1 byte, padded).
pub fn proto(p: u8) -> [u8; 4] {
    [p, 0, 0, 0]
}

/// Encodes an `inet_service` field (2 bytes big-endian, padded).
pub fn port(p: u16) -> [u8; 4] {
    let b = p.to_be_bytes();
    [b[0], b[1], 0, 0]
}

/// A netfilter netlink socket in the calling process's namespace.
pub struct NfSocket {
    fd: OwnedFd,
    seq: u32,
}

impl NfSocket {
    /// The socket's descriptor, to close elsewhere.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Best effort: without it a reply that never comes blocks for good.
        let _ = setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(5, 0));
        Ok(NfSocket { fd, seq: 0 })
    }

    /// Adds (or deletes) elements of the sets/maps of table `inet TABLE`, one
    /// message per set, all in one batch: all or nothing.
    pub fn change(
        &mut self,
        add: bool,
        table: &str,
        sets: &[(&str, Vec<RawElement>)],
    ) -> io::Result<()> {
        let base = self.seq.wrapping_add(1);
        let mut buf = Vec::with_capacity(512);
        self.seq = base;
        batch_marker(&mut buf, NFNL_MSG_BATCH_BEGIN, base);
        let mut acks = 0;
        for (set, elements) in sets.iter().filter(|(_, e)| !e.is_empty()) {
            self.seq = self.seq.wrapping_add(1);
            let (kind, flags) = if add {
                (NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE as u16)
            } else {
                (NFT_MSG_DELSETELEM, 0)
            };
            let start = begin_msg(
                &mut buf,
                (NFNL_SUBSYS_NFTABLES << 8) | kind,
                libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16 | flags,
                self.seq,
                NFPROTO_INET,
            );
            put_str(&mut buf, NFTA_SET_ELEM_LIST_TABLE, table);
            put_str(&mut buf, NFTA_SET_ELEM_LIST_SET, set);
            let list = nest_start(&mut buf, NFTA_SET_ELEM_LIST_ELEMENTS);
            for e in elements {
                let elem = nest_start(&mut buf, NFTA_LIST_ELEM);
                let key = nest_start(&mut buf, NFTA_SET_ELEM_KEY);
                put(&mut buf, NFTA_DATA_VALUE, &e.key);
                nest_end(&mut buf, key);
                if let (true, Some(data)) = (add, &e.data) {
                    let d = nest_start(&mut buf, NFTA_SET_ELEM_DATA);
                    put(&mut buf, NFTA_DATA_VALUE, data);
                    nest_end(&mut buf, d);
                }
                nest_end(&mut buf, elem);
            }
            nest_end(&mut buf, list);
            end_msg(&mut buf, start);
            acks += 1;
        }
        if acks == 0 {
            return Ok(());
        }
        self.seq = self.seq.wrapping_add(1);
        batch_marker(&mut buf, NFNL_MSG_BATCH_END, self.seq);
        self.send(&buf)?;
        self.await_acks(base, self.seq, acks)
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: a zeroed sockaddr_nl addresses the kernel.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid fd, buffer and address.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads acknowledgements for sequence numbers in (first, last) until
    /// `count` arrived; the first error wins.
    fn await_acks(&self, first: u32, last: u32, mut count: usize) -> io::Result<()> {
        let mut rx = vec![0u8; 8192];
        let mut failure = None;
        while count > 0 {
            // SAFETY: valid fd and buffer.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), rx.as_mut_ptr().cast(), rx.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            let mut off = 0;
            while off + 16 <= n {
                let len =
                    u32::from_ne_bytes(rx[off..off + 4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(rx[off + 4..off + 6].try_into().expect("2 bytes"));
                let seq = u32::from_ne_bytes(rx[off + 8..off + 12].try_into().expect("4 bytes"));
                if len < 16 || off + len > n {
                    break;
                }
                if kind == libc::NLMSG_ERROR as u16 && seq > first && seq < last {
                    let code =
                        i32::from_ne_bytes(rx[off + 16..off + 20].try_into().expect("4 bytes"));
                    if code != 0 && failure.is_none() {
                        failure = Some(io::Error::from_raw_os_error(-code));
                    }
                    count -= 1;
                }
                off += (len + 3) & !3;
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

fn batch_marker(buf: &mut Vec<u8>, kind: u16, seq: u32) {
    let start = begin_msg(
        buf,
        kind,
        libc::NLM_F_REQUEST as u16,
        seq,
        libc::AF_UNSPEC as u8,
    );
    // res_id of a batch marker names the subsystem, big-endian.
    let at = start + 16 + 2;
    buf[at..at + 2].copy_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
    end_msg(buf, start);
}

/// nlmsghdr + nfgenmsg; returns the message's start for [`end_msg`].
fn begin_msg(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&[family, 0, 0, 0]);
    start
}

fn end_msg(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn put(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + ((4 - len % 4) % 4), 0);
}

fn put_str(buf: &mut Vec<u8>, kind: u16, value: &str) {
    let mut v = value.as_bytes().to_vec();
    v.push(0);
    put(buf, kind, &v);
}

fn nest_start(buf: &mut Vec<u8>, kind: u16) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    start
}

fn nest_end(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_fields_are_register_aligned() {
        let mut key = addr("10.0.0.1".parse().unwrap());
        key.extend(proto(6));
        key.extend(port(8080));
        assert_eq!(key, [10, 0, 0, 1, 6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
    }

    #[test]
    fn attributes_are_padded() {
        let mut buf = Vec::new();
        put_str(&mut buf, 1, "rete");
        assert_eq!(buf.len(), 12);
        assert_eq!(&buf[..4], &[9, 0, 1, 0]);
    }
}
