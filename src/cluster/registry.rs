//! The cluster registry in etcd: the cluster's settings and one record per
//! host, keyed by the subnet it leased.
//!
//! - `/rete/config`: [`ClusterConfig`], written once by `rete cluster init`.
//! - `/rete/subnets/<a.b.c.d-len>`: [`NodeRecord`] of the host holding that
//!   subnet, bound to the host's etcd lease. Creating it is a transaction
//!   that succeeds only while the key is absent, so two hosts never hold one
//!   subnet, however their agents race. When the lease expires the key goes,
//!   and with it the host from every peer's datapath.
//! - `/rete/removed/<node>`: the lease of a host record `rete node rm`
//!   deleted, written in the same transaction as the delete. It tells the
//!   host's agent that its record went by removal (stop), not by expiry
//!   (claim the subnet again), however late the agent looks.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const CONFIG_KEY: &str = "/rete/config";
pub const SUBNETS_PREFIX: &str = "/rete/subnets/";
pub const REMOVED_PREFIX: &str = "/rete/removed/";

/// The cluster's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterConfig {
    /// The container range every host's subnet comes from.
    pub cidr: Ipv4Net,
    /// The prefix length of each host's subnet.
    pub subnet_len: u8,
}

impl ClusterConfig {
    pub fn new(cidr: Ipv4Net, subnet_len: u8) -> Result<Self> {
        if subnet_len < cidr.prefix_len() || subnet_len > 30 {
            return Err(Error::Invalid(format!(
                "--subnet-len {subnet_len} does not fit {cidr}: use a length from {} to 30",
                cidr.prefix_len()
            )));
        }
        Ok(ClusterConfig {
            cidr: cidr.trunc(),
            subnet_len,
        })
    }

    /// Every host subnet of the range, in order.
    pub fn subnets(&self) -> impl Iterator<Item = Ipv4Net> {
        self.cidr
            .subnets(self.subnet_len)
            .expect("subnet_len checked against the range")
    }
}

/// How a host reaches its peers' container subnets.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// A VXLAN overlay over the underlay (any L3 underlay).
    Vxlan,
    /// Plain routes via the peers' underlay addresses (one L2 underlay).
    HostGw,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "vxlan" => Ok(Backend::Vxlan),
            "host-gw" => Ok(Backend::HostGw),
            other => Err(format!("unknown backend \"{other}\": use vxlan or host-gw")),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        })
    }
}

/// What a host publishes about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeRecord {
    pub node: String,
    pub subnet: Ipv4Net,
    /// Its address on the underlay.
    pub underlay: Ipv4Addr,
    pub backend: Backend,
    /// The MAC of its VXLAN device (vxlan backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
}

/// A record as read from etcd, with what a transaction needs to replace it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub record: NodeRecord,
    pub mod_revision: i64,
    pub lease: i64,
}

pub fn subnet_key(subnet: Ipv4Net) -> String {
    format!(
        "{SUBNETS_PREFIX}{}-{}",
        subnet.network(),
        subnet.prefix_len()
    )
}

pub fn etcd_error(what: &str, e: etcd_client::Error) -> Error {
    Error::Cluster(format!("{what}: {}", describe(&e)))
}

/// The error's text, with its details when the text alone says little (a
/// transport error does not say which certificate was refused).
fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::TransportError(t) => format!("{e} ({t:?})"),
        _ => e.to_string(),
    }
}

/// How to reach etcd: endpoints and, for https ones, TLS files.
#[derive(Debug, Clone, Default)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// The CA that signed etcd's server certificate.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, for etcd's --client-cert-auth.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl EtcdConfig {
    fn tls(&self) -> Result<Option<etcd_client::TlsOptions>> {
        if self.ca.is_none() && self.cert.is_none() && self.key.is_none() {
            return Ok(None);
        }
        let read = |p: &PathBuf, what: &str| {
            std::fs::read(p)
                .map_err(|e| Error::Invalid(format!("cannot read the {what} {}: {e}", p.display())))
        };
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(
                ca,
                "etcd CA (--etcd-ca)",
            )?));
        }
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                tls = tls.identity(etcd_client::Identity::from_pem(
                    read(c, "client certificate (--etcd-cert)")?,
                    read(k, "client key (--etcd-key)")?,
                ))
            }
            (None, None) => {}
            _ => {
                return Err(Error::Invalid(
                    "--etcd-cert and --etcd-key go together; give both or neither".into(),
                ))
            }
        }
        Ok(Some(tls))
    }
}

/// Connects to the first etcd endpoint that answers.
pub async fn connect(etcd: &EtcdConfig) -> Result<Client> {
    let endpoints = &etcd.endpoints;
    let mut opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(std::time::Duration::from_secs(2))
        .with_timeout(std::time::Duration::from_secs(5));
    if let Some(tls) = etcd.tls()? {
        opts = opts.with_tls(tls);
    }
    Client::connect(endpoints, Some(opts)).await.map_err(|e| {
        Error::Cluster(format!(
            "cannot reach etcd at {}: {}; check --etcd and its TLS files",
            endpoints.join(","),
            describe(&e)
        ))
    })
}

/// Writes the cluster settings; refuses to change settings already there.
pub async fn init(client: &mut Client, config: &ClusterConfig) -> Result<()> {
    let value = serde_json::to_string(config)?;
    let txn = Txn::new()
        .when([Compare::create_revision(CONFIG_KEY, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(CONFIG_KEY, value, None)]);
    let done = client
        .txn(txn)
        .await
        .map_err(|e| etcd_error("write cluster settings", e))?;
    if done.succeeded() {
        return Ok(());
    }
    match read_config(client).await? {
        Some(have) if &have == config => Ok(()),
        Some(have) => Err(Error::Conflict(format!(
            "the cluster is already initialised with --cidr {} --subnet-len {}; hosts hold subnets of it",
            have.cidr, have.subnet_len
        ))),
        None => Err(Error::Cluster("cluster settings vanished while written; retry".into())),
    }
}

pub async fn read_config(client: &mut Client) -> Result<Option<ClusterConfig>> {
    let resp = client
        .get(CONFIG_KEY, None)
        .await
        .map_err(|e| etcd_error("read cluster settings", e))?;
    resp.kvs()
        .first()
        .map(|kv| {
            serde_json::from_slice(kv.value())
                .map_err(|e| Error::Cluster(format!("{CONFIG_KEY} is not valid: {e}")))
        })
        .transpose()
}

/// Every host record, and the revision they were read at.
pub async fn list(client: &mut Client) -> Result<(Vec<Entry>, i64)> {
    let resp = client
        .get(SUBNETS_PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| etcd_error("list hosts", e))?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    let entries = resp
        .kvs()
        .iter()
        .filter_map(|kv| {
            let record = serde_json::from_slice(kv.value()).ok()?;
            Some(Entry {
                record,
                mod_revision: kv.mod_revision(),
                lease: kv.lease(),
            })
        })
        .collect();
    Ok((entries, revision))
}

/// Leases a subnet for `me` under etcd lease `lease`: the one it already
/// holds (after an agent restart: taken over in a transaction on its
/// revision), else `preferred` (the one it held last, if still free), else
/// the first free one of the range. Each claim is create-if-absent.
pub async fn claim(
    client: &mut Client,
    config: &ClusterConfig,
    me: NodeRecordTemplate<'_>,
    preferred: Option<Ipv4Net>,
    lease: i64,
) -> Result<NodeRecord> {
    let (entries, _) = list(client).await?;
    if let Some(own) = entries.iter().find(|e| e.record.node == me.node) {
        let record = me.with_subnet(own.record.subnet);
        let unchanged = Compare::mod_revision(
            subnet_key(own.record.subnet),
            CompareOp::Equal,
            own.mod_revision,
        );
        if put_if(client, unchanged, &record, lease, "renew subnet").await? {
            return Ok(record);
        }
    }
    let taken: Vec<Ipv4Net> = entries.iter().map(|e| e.record.subnet).collect();
    // Each host starts its search at its own place in the range, so agents
    // starting together do not all race for the same first free subnet.
    let mut all: Vec<Ipv4Net> = config.subnets().collect();
    let start = start_offset(me.node, all.len());
    all.rotate_left(start);
    let candidates = preferred
        .filter(|p| config.cidr.contains(p) && p.prefix_len() == config.subnet_len)
        .into_iter()
        .chain(all)
        .filter(|s| !taken.contains(s));
    for subnet in candidates {
        let record = me.with_subnet(subnet);
        let absent = Compare::create_revision(subnet_key(subnet), CompareOp::Equal, 0);
        if put_if(client, absent, &record, lease, "lease a subnet").await? {
            return Ok(record);
        }
    }
    Err(Error::Exhausted(format!(
        "every /{} subnet of the cluster range {} is held by a host; remove hosts with `rete node rm` or use a larger range",
        config.subnet_len, config.cidr
    )))
}

/// Writes `record` under its subnet's key, bound to `lease`, if `when`
/// holds; returns whether it did.
async fn put_if(
    client: &mut Client,
    when: Compare,
    record: &NodeRecord,
    lease: i64,
    what: &str,
) -> Result<bool> {
    let txn = Txn::new().when([when]).and_then([TxnOp::put(
        subnet_key(record.subnet),
        serde_json::to_string(record)?,
        Some(PutOptions::new().with_lease(lease)),
    )]);
    Ok(client
        .txn(txn)
        .await
        .map_err(|e| etcd_error(what, e))?
        .succeeded())
}

/// Where host `node` starts looking among `n` subnets: a hash of its name
/// (FNV-1a, stable across versions and machines).
fn start_offset(node: &str, n: usize) -> usize {
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    if n == 0 {
        0
    } else {
        (hash % n as u64) as usize
    }
}

/// The parts of a host's record that do not depend on its subnet.
#[derive(Debug, Clone, Copy)]
pub struct NodeRecordTemplate<'a> {
    pub node: &'a str,
    pub underlay: Ipv4Addr,
    pub backend: Backend,
}

impl NodeRecordTemplate<'_> {
    fn with_subnet(&self, subnet: Ipv4Net) -> NodeRecord {
        NodeRecord {
            node: self.node.to_string(),
            subnet,
            underlay: self.underlay,
            backend: self.backend,
            vtep_mac: (self.backend == Backend::Vxlan)
                .then(|| crate::names::format_mac(&vtep_mac(subnet))),
        }
    }
}

/// The VXLAN device's MAC of the host holding `subnet`: locally
/// administered, derived from the subnet, so it is stable across restarts
/// and unique in the cluster.
pub fn vtep_mac(subnet: Ipv4Net) -> [u8; 6] {
    let o = subnet.network().octets();
    [0x02, 0x52, o[0], o[1], o[2], o[3]]
}

/// Removes a host's record (and so the host from every peer's datapath).
/// Returns false when no host of that name is registered.
pub async fn remove(client: &mut Client, node: &str) -> Result<bool> {
    let (entries, _) = list(client).await?;
    let mut found = false;
    for e in entries.iter().filter(|e| e.record.node == node) {
        let txn = Txn::new().and_then([
            TxnOp::delete(subnet_key(e.record.subnet), None),
            TxnOp::put(removed_key(node), e.lease.to_string(), None),
        ]);
        client
            .txn(txn)
            .await
            .map_err(|err| etcd_error("remove host", err))?;
        if e.lease != 0 {
            let _ = client.lease_revoke(e.lease).await;
        }
        found = true;
    }
    Ok(found)
}

fn removed_key(node: &str) -> String {
    format!("{REMOVED_PREFIX}{node}")
}

/// Whether `rete node rm` removed the record host `node` held under
/// `lease`.
pub async fn was_removed(client: &mut Client, node: &str, lease: i64) -> Result<bool> {
    let resp = client
        .get(removed_key(node), None)
        .await
        .map_err(|e| etcd_error("read the removal mark", e))?;
    Ok(resp
        .kvs()
        .first()
        .is_some_and(|kv| kv.value() == lease.to_string().as_bytes()))
}

/// Drops the removal mark of host `node`: its agent has seen it, or a new
/// agent joins the host to the cluster again.
pub async fn forget_removal(client: &mut Client, node: &str) -> Result<()> {
    client
        .delete(removed_key(node), None)
        .await
        .map_err(|e| etcd_error("clear the removal mark", e))?;
    Ok(())
}

/// Seconds left on a lease (None when it expired or was revoked).
pub async fn lease_ttl(client: &mut Client, lease: i64) -> Option<i64> {
    let resp = client.lease_time_to_live(lease, None).await.ok()?;
    (resp.ttl() > 0).then_some(resp.ttl())
}

/// The address this host uses toward the first etcd endpoint: the default
/// underlay address. Found by a route lookup (a connected UDP socket sends
/// nothing).
pub fn local_address_toward(endpoints: &[String]) -> Result<Ipv4Addr> {
    let first = endpoints.first().map(String::as_str).unwrap_or_default();
    let hostport = first
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let addr: std::net::SocketAddr = hostport.parse().map_err(|_| {
        Error::Invalid(format!(
            "cannot tell the underlay address from etcd endpoint \"{first}\"; give --underlay IP or --underlay-interface NAME"
        ))
    })?;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")
        .map_err(|e| Error::kernel("open a UDP socket", e))?;
    sock.connect(addr).map_err(|e| {
        Error::kernel(
            format!("find a route toward etcd at {addr}; give --underlay"),
            e,
        )
    })?;
    match sock.local_addr().map(|a| a.ip()) {
        Ok(IpAddr::V4(a)) => Ok(a),
        _ => Err(Error::Invalid(
            "the route toward etcd has no IPv4 source; give --underlay".into(),
        )),
    }
}
