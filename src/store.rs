//! The embedded store: SQLite in WAL mode under the state dir, shared safely
//! by many concurrent rete processes.
//!
//! Writers serialize on an advisory lock file before `BEGIN IMMEDIATE`: the
//! kernel wakes the next waiter the moment the lock is free, where SQLite's
//! own busy handler would sleep and poll. Readers never wait.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::net::IpAddr;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::model::{Container, Network, PortMapping, Tap};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS networks (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS containers (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    network TEXT NOT NULL, ip TEXT NOT NULL, container TEXT NOT NULL,
    PRIMARY KEY (network, ip));
CREATE INDEX IF NOT EXISTS leases_by_container ON leases (container);
CREATE TABLE IF NOT EXISTS ports (
    family INTEGER NOT NULL, host_ip TEXT NOT NULL, protocol TEXT NOT NULL,
    port INTEGER NOT NULL, container TEXT NOT NULL,
    PRIMARY KEY (family, protocol, port, host_ip));
CREATE INDEX IF NOT EXISTS ports_by_container ON ports (container);
CREATE INDEX IF NOT EXISTS containers_by_namespace_owner
    ON containers (json_extract(data, '$.mode.of'))
    WHERE json_extract(data, '$.mode.mode') = 'container';
CREATE TABLE IF NOT EXISTS taps (name TEXT PRIMARY KEY, network TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ipam_cursors (
    pool TEXT NOT NULL, range TEXT NOT NULL, last TEXT NOT NULL,
    PRIMARY KEY (pool, range)) WITHOUT ROWID;
PRAGMA user_version = 3;
";

/// The schema's version: 2 added `ipam_cursors`, 3 the index of containers
/// by the container whose namespace they share. Every statement of
/// [`SCHEMA`] is idempotent, so a store of an older version is brought up
/// to date by running it again.
const SCHEMA_VERSION: i64 = 3;

/// The store of one state dir.
pub struct Store {
    conn: Connection,
    lock_path: std::path::PathBuf,
    wal_path: std::path::PathBuf,
}

/// The WAL size past which a writer checkpoints and truncates it.
const WAL_LIMIT: u64 = 256 * 1024;

impl Store {
    pub fn open(state_dir: &Path) -> Result<Self> {
        fs::create_dir_all(state_dir).map_err(|e| {
            Error::Store(format!(
                "cannot create state dir {}: {e}; set --state-dir or RETE_STATE_DIR to a writable directory",
                state_dir.display()
            ))
        })?;
        let conn = Connection::open(state_dir.join("rete.db"))?;

        conn.busy_timeout(std::time::Duration::from_secs(60))?;
        // WAL: readers and the writer do not block each other; NORMAL sync:
        // durable at checkpoints, atomic always (what a network store needs).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Each rete process is short-lived, and a checkpoint costs two
        // fsyncs (milliseconds here): more than the operation itself. So the
        // WAL outlives the process and is checkpointed every 64 pages during
        // a commit (see `write`). Kept small, because the first process to
        // open the store re-reads the whole WAL to rebuild its index.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let store = Store {
            conn,
            lock_path: state_dir.join("lock"),
            wal_path: state_dir.join("rete.db-wal"),
        };
        if version < SCHEMA_VERSION {
            store.write(|db| Ok(db.0.execute_batch(SCHEMA)?))?;
        }
        Ok(store)
    }

    /// Runs `f` as one write transaction: committed if it returns Ok, rolled
    /// back otherwise. Writers across processes run one at a time.
    pub fn write<T>(&self, f: impl FnOnce(&Db) -> Result<T>) -> Result<T> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| Error::Store(format!("{}: {e}", self.lock_path.display())))?;
        let _lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::Store(format!("lock {}: {e}", self.lock_path.display())))?;
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(&Db(&self.conn)) {
            Ok(v) => {
                self.conn.execute_batch("COMMIT")?;
                if fs::metadata(&self.wal_path).is_ok_and(|m| m.len() > WAL_LIMIT) {
                    // Still under the lock: no writer races the truncation.
                    self.conn
                        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
                }
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// A number that changes whenever another connection commits: how the
    /// resolver notices that records changed.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Read access without a transaction (WAL gives a consistent snapshot per
    /// statement).
    pub fn read(&self) -> Db<'_> {
        Db(&self.conn)
    }
}

/// Queries and updates, inside or outside a write transaction.
pub struct Db<'a>(&'a Connection);

fn get<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    key: &str,
) -> Result<Option<T>> {
    let data: Option<String> = conn.query_row(sql, [key], |r| r.get(0)).optional()?;
    data.map(|d| serde_json::from_str(&d).map_err(Error::from))
        .transpose()
}

fn all<T: serde::de::DeserializeOwned>(conn: &Connection, sql: &str) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.map(|d| Ok(serde_json::from_str(&d?)?)).collect()
}

impl Db<'_> {
    pub fn network(&self, name: &str) -> Result<Option<Network>> {
        get(self.0, "SELECT data FROM networks WHERE name = ?1", name)
    }

    pub fn networks(&self) -> Result<Vec<Network>> {
        all(self.0, "SELECT data FROM networks ORDER BY name")
    }

    pub fn put_network(&self, n: &Network) -> Result<()> {
        self.0.execute(
            "INSERT OR REPLACE INTO networks (name, data) VALUES (?1, ?2)",
            params![n.name, serde_json::to_string(n)?],
        )?;
        Ok(())
    }

    /// Deletes a network's record and where its ranges' allocation stopped.
    pub fn delete_network(&self, name: &str) -> Result<()> {
        self.0
            .execute("DELETE FROM networks WHERE name = ?1", [name])?;
        self.0
            .execute("DELETE FROM ipam_cursors WHERE pool = ?1", [name])?;
        Ok(())
    }

    pub fn container(&self, name: &str) -> Result<Option<Container>> {
        get(self.0, "SELECT data FROM containers WHERE name = ?1", name)
    }

    pub fn containers(&self) -> Result<Vec<Container>> {
        all(self.0, "SELECT data FROM containers ORDER BY name")
    }

    /// Containers in the network namespace of `name` (`--network
    /// container:NAME`): one lookup in `containers_by_namespace_owner`, an
    /// index on the same JSON expressions (a scan parsing every record cost
    /// each `rm` ~0.15 ms at 1000 containers).
    pub fn sharing_namespace_of(&self, name: &str) -> Result<Vec<String>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT name FROM containers WHERE json_extract(data, '$.mode.mode') = 'container' \
             AND json_extract(data, '$.mode.of') = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([name], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn put_container(&self, c: &Container) -> Result<()> {
        self.0.execute(
            "INSERT OR REPLACE INTO containers (name, data) VALUES (?1, ?2)",
            params![c.name, serde_json::to_string(c)?],
        )?;
        Ok(())
    }

    /// Deletes the container's record with its leases and port claims.
    pub fn delete_container(&self, name: &str) -> Result<()> {
        self.0
            .execute("DELETE FROM containers WHERE name = ?1", [name])?;
        self.0
            .execute("DELETE FROM leases WHERE container = ?1", [name])?;
        self.0
            .execute("DELETE FROM ports WHERE container = ?1", [name])?;
        Ok(())
    }

    /// Whether an address of a network (or IPAM pool) is leased: one
    /// lookup in the leases' primary key.
    pub fn is_leased(&self, network: &str, ip: IpAddr) -> Result<bool> {
        Ok(self
            .0
            .prepare_cached("SELECT 1 FROM leases WHERE network = ?1 AND ip = ?2")?
            .query_row(params![network, ip.to_string()], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The address a range of a network (or IPAM pool) handed out last:
    /// where its next allocation starts looking ([`crate::ipam::allocate_after`]).
    pub fn last_allocated(&self, pool: &str, range: &str) -> Result<Option<IpAddr>> {
        let last: Option<String> = self
            .0
            .prepare_cached("SELECT last FROM ipam_cursors WHERE pool = ?1 AND range = ?2")?
            .query_row([pool, range], |r| r.get(0))
            .optional()?;
        last.map(|ip| {
            ip.parse()
                .map_err(|_| Error::Store(format!("corrupt allocation cursor of {pool}")))
        })
        .transpose()
    }

    pub fn set_last_allocated(&self, pool: &str, range: &str, ip: IpAddr) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT OR REPLACE INTO ipam_cursors (pool, range, last) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![pool, range, ip.to_string()])?;
        Ok(())
    }

    /// Addresses one owner holds on a network (or IPAM pool).
    pub fn leases_of(&self, network: &str, owner: &str) -> Result<Vec<IpAddr>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT ip FROM leases WHERE network = ?1 AND container = ?2")?;
        let rows = stmt.query_map([network, owner], |r| r.get::<_, String>(0))?;
        rows.map(|ip| {
            ip?.parse()
                .map_err(|_| Error::Store("corrupt lease address".into()))
        })
        .collect()
    }

    /// Everyone holding a lease on a network (or IPAM pool).
    pub fn lease_owners(&self, network: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT DISTINCT container FROM leases WHERE network = ?1")?;
        let rows = stmt.query_map([network], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Some holder of a lease on a network (or IPAM pool), found through
    /// the index: a quick "is anyone there".
    pub fn any_lease_owner(&self, network: &str) -> Result<Option<String>> {
        Ok(self
            .0
            .prepare_cached("SELECT container FROM leases WHERE network = ?1 LIMIT 1")?
            .query_row([network], |r| r.get::<_, String>(0))
            .optional()?)
    }

    /// The containers with an endpoint on a network, by name, read in SQL
    /// (no container is deserialized).
    pub fn attached_to(&self, network: &str) -> Result<Vec<String>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT name FROM containers WHERE EXISTS (SELECT 1 FROM json_each(data, '$.endpoints') \
             WHERE json_extract(value, '$.network') = ?1) ORDER BY name",
        )?;
        let rows = stmt.query_map([network], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn add_lease(&self, network: &str, ip: IpAddr, container: &str) -> Result<()> {
        self.0.execute(
            "INSERT INTO leases (network, ip, container) VALUES (?1, ?2, ?3)",
            params![network, ip.to_string(), container],
        )?;
        Ok(())
    }

    pub fn release_leases(&self, network: &str, container: &str) -> Result<()> {
        self.0.execute(
            "DELETE FROM leases WHERE network = ?1 AND container = ?2",
            [network, container],
        )?;
        Ok(())
    }

    /// The container holding a claim that conflicts with `m`: same family,
    /// protocol and port, and the same address or either one unspecified.
    pub fn port_holder(&self, m: &PortMapping) -> Result<Option<String>> {
        let any = unspecified_like(m.host_ip);
        Ok(self
            .0
            .query_row(
                "SELECT container FROM ports WHERE family = ?1 AND protocol = ?2 AND port = ?3
                 AND (host_ip = ?4 OR host_ip = ?5 OR ?4 = ?5) LIMIT 1",
                params![
                    family(m.host_ip),
                    m.protocol.to_string(),
                    m.host_port,
                    m.host_ip.to_string(),
                    any.to_string()
                ],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn add_port(&self, m: &PortMapping, container: &str) -> Result<()> {
        self.0.execute(
            "INSERT INTO ports (family, host_ip, protocol, port, container) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                family(m.host_ip),
                m.host_ip.to_string(),
                m.protocol.to_string(),
                m.host_port,
                container
            ],
        )?;
        Ok(())
    }

    /// Host ports of one protocol and family in use, for picking free ones.
    pub fn used_ports(&self, protocol: &str, ip: IpAddr) -> Result<BTreeSet<u16>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT port FROM ports WHERE family = ?1 AND protocol = ?2")?;
        let rows = stmt.query_map(params![family(ip), protocol], |r| r.get::<_, u16>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn taps(&self) -> Result<Vec<Tap>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT name, network FROM taps ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(Tap {
                name: r.get(0)?,
                network: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn put_tap(&self, t: &Tap) -> Result<()> {
        self.0.execute(
            "INSERT INTO taps (name, network) VALUES (?1, ?2)",
            [&t.name, &t.network],
        )?;
        Ok(())
    }

    pub fn delete_tap(&self, name: &str) -> Result<()> {
        self.0.execute("DELETE FROM taps WHERE name = ?1", [name])?;
        Ok(())
    }
}

fn family(ip: IpAddr) -> i64 {
    if ip.is_ipv4() {
        4
    } else {
        6
    }
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}
