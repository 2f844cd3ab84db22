//! rete: a container network stack on the Linux kernel.
//!
//! One engine ([`engine::Engine`]) programs the kernel (netlink, nftables) and
//! keeps its state in an embedded store; the CLI, the CNI plugin and the
//! Podman backend are thin frontends over it.

pub mod cluster;
pub mod config;
pub mod dns;
pub mod engine;
pub mod error;
pub mod fastpath;
pub mod firewall;
pub mod ipam;
pub mod journal;
pub mod linger;
pub mod model;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod overlay;
pub mod portspec;
pub mod random;
pub mod store;
pub mod sysctl;
pub mod tc;

pub use config::Paths;
pub use engine::Engine;
pub use error::{Error, Result};
