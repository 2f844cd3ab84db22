//! The firewall: one nftables table, `inet rete`, that rete owns.
//!
//! The table's chains and rules are fixed ([`ruleset::TABLE`]); everything
//! that varies with networks and containers lives in its sets and maps. So
//! attaching a container with published ports adds map elements in one
//! transaction, never a rule, and costs the same at the thousandth container
//! as at the first. Other tables (iptables-nft, Docker, Podman, firewalld) are
//! never read or touched.

mod libnftables;
pub mod ruleset;

pub use libnftables::Nft;
pub use ruleset::Element;

use crate::error::{Error, Result};

/// The nftables side of rete: apply element changes, keep the table present.
pub struct Firewall {
    nft: Nft,
}

impl Firewall {
    pub fn open() -> Result<Self> {
        Ok(Firewall { nft: Nft::new()? })
    }

    /// Creates the table with its chains, sets and maps if it is missing.
    /// Returns true when it had to create it (its elements are then empty and
    /// the caller repopulates them from the store).
    pub fn ensure_table(&mut self) -> Result<bool> {
        if self.nft.run(ruleset::PROBE).is_ok() {
            return Ok(false);
        }
        self.nft.run(ruleset::TABLE)?;
        Ok(true)
    }

    /// Removes the table and everything in it (used when the last network is
    /// removed, so an idle host carries no rete state in the kernel).
    pub fn drop_table(&mut self) -> Result<()> {
        match self.nft.run("delete table inet rete") {
            Err(Error::Firewall(m)) if m.contains("No such file") => Ok(()),
            other => other.map(drop),
        }
    }

    /// Adds elements in one nftables transaction.
    pub fn add(&mut self, elements: &[Element]) -> Result<()> {
        if elements.is_empty() {
            return Ok(());
        }
        self.nft.run(&ruleset::render("add", elements)).map(drop)
    }

    /// Deletes elements. Elements already gone (a flushed table, an earlier
    /// interrupted removal) are skipped, so removal is idempotent.
    pub fn delete(&mut self, elements: &[Element]) -> Result<()> {
        if elements.is_empty() {
            return Ok(());
        }
        if self.nft.run(&ruleset::render("delete", elements)).is_ok() {
            return Ok(());
        }
        // The batch is atomic: one missing element fails all. Retry one by
        // one, ignoring the missing ones.
        for e in elements {
            let _ = self
                .nft
                .run(&ruleset::render("delete", std::slice::from_ref(e)));
        }
        Ok(())
    }

    /// Replaces the contents of every set and map with `elements`, in one
    /// transaction: what `gc` and a firewall reload do.
    pub fn replace_all(&mut self, elements: &[Element]) -> Result<()> {
        self.ensure_table()?;
        let mut batch = ruleset::flush_all();
        batch.push_str(&ruleset::render("add", elements));
        self.nft.run(&batch).map(drop)
    }

    /// The elements currently in the table, as nftables prints them, one line
    /// per set: for `inspect`-style diagnostics and tests.
    pub fn list(&mut self) -> Result<String> {
        self.nft.run("list table inet rete")
    }
}
