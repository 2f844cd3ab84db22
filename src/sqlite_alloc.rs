//! SQLite's own allocations through mimalloc, the allocator of the musl
//! build's Rust side (main.rs).
//!
//! Left to musl's allocator, SQLite's page cache and statement memory come
//! from fresh mappings that are zeroed on first touch and unmapped again on
//! close: ~45 page faults and a dozen munmaps per rete process, measured
//! with `perf record -e page-faults` on a create. mimalloc serves them from
//! pages the Rust side already touched.

use std::os::raw::{c_int, c_void};

use libmimalloc_sys as mi;
use rusqlite::ffi;

unsafe extern "C" fn malloc(n: c_int) -> *mut c_void {
    // SAFETY: SQLite asks for a positive size; mimalloc returns memory
    // aligned to 16 bytes (SQLite needs 8) or null.
    unsafe { mi::mi_malloc(n.max(0) as usize) }
}

unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: `p` came from `malloc` or `realloc` above.
    unsafe { mi::mi_free(p) }
}

unsafe extern "C" fn realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    // SAFETY: as for `free`.
    unsafe { mi::mi_realloc(p, n.max(0) as usize) }
}

unsafe extern "C" fn size(p: *mut c_void) -> c_int {
    // SAFETY: as for `free`.
    unsafe { mi::mi_usable_size(p) }.min(c_int::MAX as usize) as c_int
}

unsafe extern "C" fn roundup(n: c_int) -> c_int {
    // SAFETY: a pure function of the size.
    unsafe { mi::mi_good_size(n.max(0) as usize) }.min(c_int::MAX as usize) as c_int
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn shutdown(_: *mut c_void) {}

/// Makes SQLite allocate through mimalloc. Called first thing in `main`,
/// before any connection opens: SQLite takes the setting only before its
/// initialization, and refuses it after (then it keeps its default, which
/// works too).
pub fn use_mimalloc() {
    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(malloc),
        xFree: Some(free),
        xRealloc: Some(realloc),
        xSize: Some(size),
        xRoundup: Some(roundup),
        xInit: Some(init),
        xShutdown: Some(shutdown),
        pAppData: std::ptr::null_mut(),
    };
    // SAFETY: SQLITE_CONFIG_MALLOC takes a pointer to the methods, which
    // SQLite copies before returning; no other thread uses SQLite yet.
    unsafe {
        ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_MALLOC,
            &methods as *const ffi::sqlite3_mem_methods,
        );
    }
}
