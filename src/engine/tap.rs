//! Persistent tap devices plugged into a network's bridge: a VM's NIC.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use super::kernel::Kernel;
use super::{network, Engine};
use crate::error::{Error, Result};
use crate::journal::Undo;
use crate::model::Tap;
use crate::names;
use crate::store::Db;

const TUNSETIFF: libc::Ioctl = 0x4004_54ca as libc::Ioctl;
const TUNSETPERSIST: libc::Ioctl = 0x4004_54cb as libc::Ioctl;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Engine {
    /// Creates a persistent tap device on the network's bridge.
    pub fn create_tap(&mut self, name: &str, network: &str) -> Result<Tap> {
        self.transact(|db, kernel, journal| {
            names::check_ifname(name)?;
            let net = network::get(db, network)?;
            if net.driver != crate::model::Driver::Bridge {
                return Err(Error::Invalid(format!(
                    "network \"{network}\" is a {} network; a tap plugs into a bridge network (a VM on a macvlan network takes a macvtap device)",
                    net.driver
                )));
            }
            let host = kernel.host()?;
            if host
                .link(name)
                .map_err(|e| Error::kernel("list links", e))?
                .is_some()
            {
                return Err(Error::Conflict(format!(
                    "a device named \"{name}\" already exists; choose another tap name"
                )));
            }
            let bridge = host
                .link(&net.bridge)
                .map_err(|e| Error::kernel("list links", e))?
                .ok_or_else(|| {
                    Error::NotFound(format!("bridge {} is missing; run `rete gc`", net.bridge))
                })?;
            journal.record(Undo::Link(name.to_string()))?;
            make_persistent_tap(name)
                .map_err(|e| Error::kernel(format!("create tap {name}"), e))?;
            let tap = host
                .link(name)
                .map_err(|e| Error::kernel("list links", e))?
                .ok_or_else(|| {
                    Error::kernel(
                        format!("find tap {name}"),
                        std::io::Error::from_raw_os_error(libc::ENODEV),
                    )
                })?;
            host.set_controller(tap.index, bridge.index)
                .map_err(|e| Error::kernel(format!("plug {name} into {}", net.bridge), e))?;
            let t = Tap {
                name: name.to_string(),
                network: network.to_string(),
            };
            db.put_tap(&t)?;
            Ok(t)
        })
    }

    /// Removes a tap device rete created.
    pub fn remove_tap(&mut self, name: &str) -> Result<()> {
        self.transact(|db, kernel, _| {
            if !db.taps()?.iter().any(|t| t.name == name) {
                return Err(Error::NotFound(format!(
                    "tap \"{name}\" not found; see `rete tap ls`"
                )));
            }
            remove(db, kernel, name)
        })
    }
}

pub(super) fn remove(db: &Db, kernel: &mut Kernel, name: &str) -> Result<()> {
    kernel
        .host()?
        .del_link(name)
        .map_err(|e| Error::kernel(format!("delete tap {name}"), e))?;
    db.delete_tap(name)
}

fn make_persistent_tap(name: &str) -> std::io::Result<()> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: valid fd and a properly sized, initialized ifreq.
    unsafe {
        if libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
