//! Many hosts, one container network (seed 001's Kubernetes model, as
//! Flannel builds it): every host leases a subnet of the cluster range in
//! etcd, makes its `cluster` network from it, and reaches the other hosts'
//! subnets over a VXLAN overlay or by direct routes, without NAT.
//!
//! - [`registry`]: the records in etcd and the transactions on them.
//! - [`datapath`]: the kernel side (VXLAN device, routes, neighbours, FDB).
//! - [`agent`]: the loop that joins the two.

pub mod agent;
pub mod datapath;
pub mod registry;
