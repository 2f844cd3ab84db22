//! The engine: every operation on networks and containers, as transactions
//! over the store and the kernel. Frontends (CLI, CNI, Podman) call these.
//!
//! An operation runs inside one store write transaction. Each kernel change is
//! journaled (how to undo it) before it is made; if anything fails, the
//! journal is undone in reverse and the store transaction rolls back, so the
//! kernel and the store are as they were.

mod container;
mod endpoint;
mod etc_files;
mod exec;
mod gc;
mod kernel;
mod leases;
mod network;
mod pool;
mod publish;
mod runtime;
mod shaping;
mod tap;

pub use container::{ContainerRequest, NetworkChoice};
pub use gc::GcReport;
pub use network::{check_routes, route_options, NetworkRequest, SubnetRequest, DEFAULT_NETWORK};
pub use pool::PoolLease;
pub use runtime::AttachRequest;

use crate::config::Paths;
use crate::error::Result;
use crate::journal::Journal;
use crate::model::{Container, Network, Tap};
use crate::store::{Db, Store};
use kernel::Kernel;

/// One process's handle on rete: its store and its kernel connections.
pub struct Engine {
    store: Store,
    kernel: Kernel,
}

impl Engine {
    pub fn open(paths: Paths) -> Result<Self> {
        Ok(Engine {
            store: Store::open(&paths.state_dir)?,
            kernel: Kernel::new(paths),
        })
    }

    pub fn paths(&self) -> &Paths {
        &self.kernel.paths
    }

    /// Runs `op` all or nothing: see the module doc.
    fn transact<T>(
        &mut self,
        op: impl FnOnce(&Db, &mut Kernel, &mut Journal) -> Result<T>,
    ) -> Result<T> {
        let mut journal = Journal::begin(&self.kernel.paths.run_dir);
        let kernel = &mut self.kernel;
        let result = self.store.write(|db| op(db, kernel, &mut journal));
        if result.is_err() {
            kernel.undo(journal.take_undo());
        }
        kernel.end_operation();
        journal.finish();
        result
    }

    /// Runs an attachment, and once more after mending everything as
    /// `rete gc` does if it failed for a bridge the store has and the
    /// kernel lost: the state dir outlived the kernel's state (a reboot), or
    /// someone deleted the bridge. Runtimes (CNI, Podman) cannot be told to
    /// run `rete gc`, and neither should a user need to. Costs nothing on
    /// the way that succeeds.
    fn healing<T>(&mut self, mut op: impl FnMut(&mut Self) -> Result<T>) -> Result<T> {
        match op(self) {
            // What is missing (the bridge), or in use (a lease or port of an
            // attachment whose namespace went with it).
            Err(e @ (crate::Error::NotFound(_) | crate::Error::Conflict(_))) => {
                if !self.bridge_lost() {
                    return Err(e);
                }
                self.gc()?;
                op(self)
            }
            other => other,
        }
    }

    /// Whether the kernel lacks the bridge of a bridge network in the store.
    fn bridge_lost(&mut self) -> bool {
        let (Ok(networks), Ok(host)) = (self.networks(), self.kernel.host()) else {
            return false;
        };
        let Ok(links) = host.links() else {
            return false;
        };
        networks.iter().any(|n| {
            n.driver == crate::model::Driver::Bridge && !links.iter().any(|l| l.name == n.bridge)
        })
    }

    /// After a change that may have added a DNS-enabled network or records:
    /// make sure the resolver runs. A resolver that cannot start does not
    /// undo the change; it is reported.
    fn start_resolver_if_needed(&self) {
        let wanted = self
            .store
            .read()
            .networks()
            .map(|ns| ns.iter().any(|n| n.dns))
            .unwrap_or(false);
        if wanted {
            if let Err(e) = crate::dns::ensure_running(self.paths()) {
                eprintln!("rete: warning: {e}; names will not resolve until it starts");
            }
        }
    }

    /// Refreshes the resolv.conf and hosts of a container rete made.
    fn refresh_etc_files(&self, c: &Container) {
        if c.owns_netns {
            let networks = self.networks().unwrap_or_default();
            if let Err(e) = etc_files::write(&self.paths().etc_dir, c, &networks) {
                eprintln!("rete: warning: {e}");
            }
        }
    }

    pub fn networks(&self) -> Result<Vec<Network>> {
        self.store.read().networks()
    }

    pub fn network(&self, name: &str) -> Result<Network> {
        network::get(&self.store.read(), name)
    }

    pub fn containers(&self) -> Result<Vec<Container>> {
        self.store.read().containers()
    }

    pub fn container(&self, name: &str) -> Result<Container> {
        container::get(&self.store.read(), name)
    }

    pub fn taps(&self) -> Result<Vec<Tap>> {
        self.store.read().taps()
    }
}
