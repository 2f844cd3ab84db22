//! The firewall: one nftables table, `inet rete`, that rete owns.
//!
//! The table's chains and rules are fixed ([`ruleset::TABLE`]); everything
//! that varies with networks and containers lives in its sets and maps. So
//! attaching a container with published ports adds map elements in one
//! netlink batch, never a rule, and costs the same at the thousandth container
//! as at the first. Other tables (iptables-nft, Docker, Podman, firewalld) are
//! never read or touched.
//!
//! Two paths: published ports (per container, hot) go over nfnetlink
//! in-process ([`elements`]); the table itself and network-level elements
//! (rare) go through the `nft` command ([`nft_cmd`]).

mod elements;
mod nft_cmd;
pub mod ruleset;

pub use ruleset::Element;

use std::io;

use crate::error::{Error, Result};
use elements::{NfSocket, RawElement};

const TABLE: &str = "rete";

/// The nftables side of rete.
#[derive(Default)]
pub struct Firewall {
    socket: Option<NfSocket>,
    /// The table was found current (or made) by this process: later
    /// network-level adds skip the probe.
    current: bool,
    /// Elements were deleted through `socket`: closing it waits for the
    /// kernel to free them.
    deleted: bool,
}

impl Drop for Firewall {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take() {
            if self.deleted {
                crate::linger::close_later(socket.into_fd());
            }
        }
    }
}

impl Firewall {
    pub fn new() -> Self {
        Firewall::default()
    }

    /// Creates the table with its chains, sets and maps if it is missing or
    /// of an older layout (which is replaced whole). Returns true when it had
    /// to create it: its elements are then empty, for the caller to refill
    /// from the store.
    pub fn ensure_table(&mut self) -> Result<bool> {
        if nft_cmd::run(ruleset::PROBE).is_ok() {
            self.current = true;
            return Ok(false);
        }
        nft_cmd::run(&recreate(&[]))?;
        self.current = true;
        Ok(true)
    }

    /// Removes the table and everything in it.
    pub fn drop_table(&mut self) -> Result<()> {
        match nft_cmd::run("delete table inet rete\n") {
            Err(Error::Firewall(m)) if m.contains("No such file") => Ok(()),
            other => other.map(drop),
        }
    }

    /// Adds elements in one transaction. If the table is missing (someone
    /// flushed the ruleset), it is recreated and filled with `refill()`
    /// first, so the store's state comes back with it.
    pub fn add(
        &mut self,
        elements: &[Element],
        refill: impl FnOnce() -> Result<Vec<Element>>,
    ) -> Result<()> {
        if elements.is_empty() {
            return Ok(());
        }
        match self.add_once(elements) {
            Err(Missing(None)) => {
                // One transaction: the table, what the store holds, and
                // these (one nft process, where a first network in a new
                // namespace used to take eight).
                let mut all = refill()?;
                for e in elements {
                    if !all.contains(e) {
                        all.push(e.clone());
                    }
                }
                nft_cmd::run(&recreate(&all))?;
                self.current = true;
                Ok(())
            }
            Err(Missing(Some(e))) => Err(e),
            Ok(()) => Ok(()),
        }
    }

    fn add_once(&mut self, elements: &[Element]) -> std::result::Result<(), Missing> {
        let (hot, rare): (Vec<&Element>, Vec<&Element>) =
            elements.iter().partition(|e| raw(e).is_some());
        if !rare.is_empty() {
            if !self.current && nft_cmd::run(ruleset::PROBE).is_err() {
                return Err(Missing(None));
            }
            let rare: Vec<Element> = rare.into_iter().cloned().collect();
            match nft_cmd::run(&ruleset::render("add", &rare)) {
                Err(Error::Firewall(m)) if m.contains("No such file") => return Err(Missing(None)),
                Err(e) => return Err(Missing(Some(e))),
                Ok(_) => self.current = true,
            }
        }
        if !hot.is_empty() {
            match self.netlink(true, &hot) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(Missing(None)),
                Err(e) => {
                    return Err(Missing(Some(Error::Firewall(format!(
                        "add published ports: {e}"
                    )))))
                }
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// Deletes elements. Elements already gone (a flushed table, an earlier
    /// interrupted removal) are skipped, so removal is idempotent.
    pub fn delete(&mut self, elements: &[Element]) -> Result<()> {
        let (hot, rare): (Vec<&Element>, Vec<&Element>) =
            elements.iter().partition(|e| raw(e).is_some());
        if !hot.is_empty() && self.netlink(false, &hot).is_err() {
            // A batch is atomic: one missing element fails all. Retry one
            // by one, skipping the missing ones.
            for e in hot {
                let _ = self.netlink(false, &[e]);
            }
        }
        if !rare.is_empty() {
            let rare: Vec<Element> = rare.into_iter().cloned().collect();
            if nft_cmd::run(&ruleset::render("delete", &rare)).is_err() {
                for e in rare {
                    let _ = nft_cmd::run(&ruleset::render("delete", std::slice::from_ref(&e)));
                }
            }
        }
        Ok(())
    }

    /// Makes the table hold exactly `elements`, in one transaction: what
    /// `gc` and a firewall reload do.
    pub fn replace_all(&mut self, elements: &[Element]) -> Result<()> {
        self.ensure_table()?;
        let mut script = ruleset::flush_all();
        script.push_str(&ruleset::render("add", elements));
        nft_cmd::run(&script).map(drop)
    }

    fn netlink(&mut self, add: bool, elements: &[&Element]) -> io::Result<()> {
        if self.socket.is_none() {
            self.socket = Some(NfSocket::open()?);
        }
        self.deleted |= !add;
        let mut sets: Vec<(&str, Vec<RawElement>)> = Vec::new();
        for e in elements {
            let (set, raw) = raw(e).expect("only publish elements take the netlink path");
            match sets.iter_mut().find(|(s, _)| *s == set) {
                Some((_, v)) => v.push(raw),
                None => sets.push((set, vec![raw])),
            }
        }
        self.socket
            .as_mut()
            .expect("opened above")
            .change(add, TABLE, &sets)
    }
}

/// A failed add: `None` when the table or a set is missing.
struct Missing(Option<Error>);

/// An nft script that replaces the table (missing, or of an older layout)
/// with a fresh one holding `elements`, as one transaction. The empty
/// `table` first makes the delete succeed when there is none.
fn recreate(elements: &[Element]) -> String {
    let mut script = String::from("table inet rete {}\ndelete table inet rete\n");
    script.push_str(ruleset::TABLE);
    script.push_str(&ruleset::render("add", elements));
    script
}

/// The binary form of a published-port element, with its map's name.
fn raw(e: &Element) -> Option<(&'static str, RawElement)> {
    let Element::Publish {
        host_ip,
        protocol,
        host_port,
        target,
        target_port,
    } = e
    else {
        return None;
    };
    let mut key = Vec::with_capacity(24);
    if !host_ip.is_unspecified() {
        key.extend(elements::addr(*host_ip));
    }
    key.extend(elements::proto(protocol.number()));
    key.extend(elements::port(*host_port));
    let mut data = elements::addr(*target);
    data.extend(elements::port(*target_port));
    Some((
        e.set(),
        RawElement {
            key,
            data: Some(data),
        },
    ))
}
