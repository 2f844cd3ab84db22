//! Tap devices for VMs: `rete tap create` makes a persistent tap whose master
//! is the network's bridge, a VM attached to it shares the containers'
//! link, the network cannot be removed under it, and `rete tap rm` removes
//! it.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;

fn bridge_of(lab: &Lab, network: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&lab.rete_ok(&["network", "inspect", network])).unwrap();
    v[0]["bridge"].as_str().unwrap().to_string()
}

/// The device's master as sysfs shows it. /sys shows the namespace that
/// mounted it, so read a sysfs mounted in a private mount namespace from
/// inside the lab's host namespace.
fn sysfs_master(lab: &Lab, dev: &str) -> String {
    lab.sh_host(&format!(
        "unshare -m sh -c 'mount -t sysfs sysfs /sys && readlink /sys/class/net/{dev}/master'"
    ))
    .trim()
    .rsplit('/')
    .next()
    .unwrap()
    .to_string()
}

/// A VM's end of a tap: the tap's file descriptor, opened in the lab's host
/// namespace (the tun driver looks the device up in the opener's).
struct Vm {
    tun: File,
    mac: [u8; 6],
    ip: Ipv4Addr,
}

const TUNSETIFF: libc::Ioctl = 0x4004_54ca as libc::Ioctl;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Vm {
    fn attach(lab: &Lab, tap: &str, ip: Ipv4Addr) -> Vm {
        let tap = tap.to_string();
        let tun = in_ns(&lab.host, move || {
            let tun = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .expect("open /dev/net/tun");
            let mut req = IfReq {
                name: [0; libc::IFNAMSIZ],
                flags: IFF_TAP | IFF_NO_PI,
                _pad: [0; 22],
            };
            req.name[..tap.len()].copy_from_slice(tap.as_bytes());
            // SAFETY: a valid fd and a properly sized, initialized ifreq.
            let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) };
            assert_eq!(
                rc,
                0,
                "attach to {tap}: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a valid fd.
            unsafe {
                let fl = libc::fcntl(tun.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(tun.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
            tun
        });
        Vm {
            tun,
            mac: [0x02, 0x00, 0x00, 0x75, 0x00, 0x50],
            ip,
        }
    }

    /// ARPs for `target`; returns the MAC that answered, or None within 3 s
    /// (the request is repeated every 500 ms).
    fn arp(&mut self, target: Ipv4Addr) -> Option<[u8; 6]> {
        let mut req = Vec::with_capacity(42);
        req.extend_from_slice(&[0xff; 6]);
        req.extend_from_slice(&self.mac);
        req.extend_from_slice(&[0x08, 0x06]); // ARP
        req.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]); // Ethernet/IPv4 request
        req.extend_from_slice(&self.mac);
        req.extend_from_slice(&self.ip.octets());
        req.extend_from_slice(&[0; 6]);
        req.extend_from_slice(&target.octets());
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buf = [0u8; 2048];
        let mut next_send = Instant::now();
        while Instant::now() < deadline {
            if Instant::now() >= next_send {
                // The tap may need a moment to get its carrier.
                let _ = self.tun.write(&req);
                next_send = Instant::now() + Duration::from_millis(500);
            }
            match self.tun.read(&mut buf) {
                Ok(n) if n >= 42 => {
                    let f = &buf[..n];
                    let is_reply = f[12..14] == [0x08, 0x06] && f[20..22] == [0x00, 0x02];
                    if is_reply && f[28..32] == target.octets() && f[32..38] == self.mac {
                        return Some(f[22..28].try_into().unwrap());
                    }
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        None
    }
}

fn mac_string(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn a_tap_is_plugged_into_the_network_bridge_and_removed_with_tap_rm() {
    require_root!();
    let lab = Lab::new("tap-basic");
    lab.rete_ok(&["network", "create", "vmnet", "--subnet", "10.75.0.0/24"]);
    let bridge = bridge_of(&lab, "vmnet");
    assert_eq!(
        lab.rete_ok(&["tap", "create", "vmtap0", "--network", "vmnet"])
            .trim(),
        "vmtap0"
    );

    // A persistent tap whose master is the bridge.
    let link = lab.sh_host("ip -d link show vmtap0");
    assert!(link.contains("tun type tap"), "{link}");
    assert!(link.contains("persist on"), "{link}");
    assert!(link.contains(&format!("master {bridge} ")), "{link}");
    assert_eq!(sysfs_master(&lab, "vmtap0"), bridge);
    let ls = lab.rete_ok(&["tap", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["vmtap0", "vmnet"]),
        "{ls}"
    );

    // A VM on the tap shares the link with the gateway and the containers.
    lab.rete_ok(&["create", "c", "--network", "vmnet"]);
    let c_ip = match lab.addr_of("c", "vmnet", false) {
        std::net::IpAddr::V4(a) => a,
        other => panic!("{other}"),
    };
    let c_mac = lab.inspect("c")["endpoints"][0]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    let bridge_mac = lab
        .sh_host(&format!("ip -o link show {bridge}"))
        .split("link/ether ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    {
        let mut vm = Vm::attach(&lab, "vmtap0", "10.75.0.200".parse().unwrap());
        let gw = vm
            .arp("10.75.0.1".parse().unwrap())
            .expect("the gateway answers the VM");
        assert_eq!(mac_string(gw), bridge_mac);
        let c = vm.arp(c_ip).expect("the container answers the VM");
        assert_eq!(mac_string(c), c_mac);
    }
    // The tap outlives the VM that used it.
    assert!(lab.host_links().contains(&"vmtap0".to_string()));

    // Taps are per name: a second one with the same name is refused.
    let err = lab.rete_err(&["tap", "create", "vmtap0", "--network", "vmnet"]);
    assert!(err.contains("already exists"), "{err}");

    lab.rete_ok(&["rm", "c"]);
    lab.rete_ok(&["tap", "rm", "vmtap0"]);
    assert!(!lab.host_links().contains(&"vmtap0".to_string()));
    assert_eq!(
        lab.rete_ok(&["tap", "ls"]).lines().count(),
        1,
        "header only"
    );
    let err = lab.rete_err(&["tap", "rm", "vmtap0"]);
    assert!(err.contains("not found"), "{err}");
    lab.rete_ok(&["network", "rm", "vmnet"]);
    assert_no_residue(&lab);
}

#[test]
fn a_network_with_a_tap_is_not_removed_unless_forced() {
    require_root!();
    let lab = Lab::new("tap-inuse");
    lab.rete_ok(&["network", "create", "vmnet", "--subnet", "10.75.1.0/24"]);
    lab.rete_ok(&["network", "create", "other", "--subnet", "10.75.2.0/24"]);
    lab.rete_ok(&["tap", "create", "vmtap1", "--network", "vmnet"]);
    lab.rete_ok(&["tap", "create", "vmtap2", "--network", "other"]);
    let bridge = bridge_of(&lab, "vmnet");

    let out = lab.rete(&["network", "rm", "vmnet"]);
    assert_eq!(out.status.code(), Some(4), "in use");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("network \"vmnet\" is in use"), "{err}");
    assert!(err.contains("tap vmtap1"), "{err}");
    // Nothing was touched by the refusal.
    assert_eq!(sysfs_master(&lab, "vmtap1"), bridge);
    assert!(lab.host_links().contains(&bridge));
    // `network prune` leaves it alone too.
    lab.rete_ok(&["network", "prune"]);
    assert!(lab.rete_ok(&["network", "ls", "-q"]).contains("vmnet"));

    // --force removes the tap with the network.
    lab.rete_ok(&["network", "rm", "--force", "vmnet"]);
    let links = lab.host_links();
    assert!(!links.contains(&"vmtap1".to_string()), "{links:?}");
    assert!(!links.contains(&bridge), "{links:?}");
    let ls = lab.rete_ok(&["tap", "ls"]);
    assert!(!ls.contains("vmtap1"), "{ls}");
    assert!(ls.contains("vmtap2"), "the other network's tap stays: {ls}");

    lab.rete_ok(&["tap", "rm", "vmtap2"]);
    lab.rete_ok(&["network", "rm", "other"]);
    assert!(!lab.host_links().contains(&"vmtap2".to_string()));
    assert_no_residue(&lab);
}
