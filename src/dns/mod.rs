//! Name resolution between containers: an embedded resolver serving each
//! DNS-enabled network on its gateway address, forwarding other names to the
//! host's resolvers.

pub mod server;
pub mod service;
pub mod upstream;
pub mod zone;

pub use service::ensure_running;
