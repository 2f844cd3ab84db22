//! Name-service lookups in a statically linked rete.
//!
//! rete is linked statically (`.cargo/config.toml`) because it runs as one
//! short process per operation. A static glibc answers lookups from the
//! modules built into it (`files`, `dns`), but loads any other module named
//! in /etc/nsswitch.conf (`systemd`, `myhostname`, `mdns4`, ...) as a
//! shared library built against the shared glibc: two C libraries in one
//! process, which crashes. So, before anything can look a name up, the
//! process is told to use only the built-in modules. rete's own lookups are
//! host names (e.g. etcd endpoints) and, through its dependencies, nothing
//! that needs another module.
//!
//! Only in a glibc build (`src/main.rs`): musl has no name-service switch;
//! it reads /etc/hosts and asks DNS itself.

use std::ffi::{c_char, c_int};

extern "C" {
    /// glibc's override of one nsswitch.conf line for this process (<nss.h>).
    fn __nss_configure_lookup(db: *const c_char, service_line: *const c_char) -> c_int;
}

/// The databases a process might query, each limited to built-in modules.
const BUILT_IN: &[(&std::ffi::CStr, &std::ffi::CStr)] = &[
    (c"hosts", c"files dns"),
    (c"passwd", c"files"),
    (c"group", c"files"),
    (c"shadow", c"files"),
    (c"gshadow", c"files"),
    (c"initgroups", c"files"),
    (c"networks", c"files"),
    (c"protocols", c"files"),
    (c"services", c"files"),
    (c"ethers", c"files"),
    (c"rpc", c"files"),
    (c"netgroup", c"files"),
];

/// Limits name-service lookups to glibc's built-in modules when rete is
/// statically linked; a dynamically linked rete keeps the machine's setup.
/// Call first in `main`, while the process has one thread.
pub fn use_built_in_modules() {
    if !cfg!(target_feature = "crt-static") {
        return;
    }
    for (db, line) in BUILT_IN {
        // SAFETY: both arguments are NUL-terminated static strings; the call
        // only records them, and no other thread exists yet to look up.
        unsafe {
            __nss_configure_lookup(db.as_ptr(), line.as_ptr());
        }
    }
}
