//! Kernel parameters under /proc/sys. /proc/sys/net shows the network
//! namespace of the process that opens it, so these act on rete's namespace.

use crate::error::{Error, Result};

/// Sets `key` (dotted, as `sysctl` names it) to `value` unless it already is.
pub fn ensure(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|e| Error::kernel(format!("set {key}={value}"), e))
}

/// The per-interface form of [`ensure`]; interface names may contain dots,
/// which the dotted form cannot carry.
pub fn ensure_if(family: &str, ifname: &str, leaf: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/net/{family}/conf/{ifname}/{leaf}");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value)
        .map_err(|e| Error::kernel(format!("set net.{family}.conf.{ifname}.{leaf}={value}"), e))
}

/// Sets a per-interface parameter without reading it first: for a link
/// just made, whose value is the default.
pub fn set_if(family: &str, ifname: &str, leaf: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/net/{family}/conf/{ifname}/{leaf}");
    std::fs::write(&path, value)
        .map_err(|e| Error::kernel(format!("set net.{family}.conf.{ifname}.{leaf}={value}"), e))
}
