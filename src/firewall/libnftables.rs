//! In-process nftables through libnftables (the library behind the `nft`
//! command): the same language and transactions as `nft -f`, without a
//! process per change.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use crate::error::{Error, Result};

#[link(name = "nftables")]
extern "C" {
    fn nft_ctx_new(flags: u32) -> *mut c_void;
    fn nft_ctx_free(ctx: *mut c_void);
    fn nft_ctx_buffer_output(ctx: *mut c_void) -> c_int;
    fn nft_ctx_buffer_error(ctx: *mut c_void) -> c_int;
    fn nft_ctx_get_output_buffer(ctx: *mut c_void) -> *const c_char;
    fn nft_ctx_get_error_buffer(ctx: *mut c_void) -> *const c_char;
    fn nft_run_cmd_from_buffer(ctx: *mut c_void, buf: *const c_char) -> c_int;
}

/// One libnftables context, acting in the calling process's network namespace.
pub struct Nft {
    ctx: *mut c_void,
}

impl Nft {
    pub fn new() -> Result<Self> {
        // SAFETY: plain constructor; a null return is handled below.
        let ctx = unsafe { nft_ctx_new(0) };
        if ctx.is_null() {
            return Err(Error::Firewall(
                "libnftables: cannot create a context".into(),
            ));
        }
        // SAFETY: ctx is a valid context from nft_ctx_new.
        unsafe {
            nft_ctx_buffer_output(ctx);
            nft_ctx_buffer_error(ctx);
        }
        Ok(Nft { ctx })
    }

    /// Runs commands in nft syntax as one transaction; returns what nft printed.
    pub fn run(&mut self, commands: &str) -> Result<String> {
        let buf = CString::new(commands)
            .map_err(|_| Error::Firewall("command contains a NUL byte".into()))?;
        // SAFETY: ctx is valid; buf is a NUL-terminated string that outlives the call;
        // the returned buffers are owned by ctx and copied before the next call.
        unsafe {
            let rc = nft_run_cmd_from_buffer(self.ctx, buf.as_ptr());
            let out = text(nft_ctx_get_output_buffer(self.ctx));
            let err = text(nft_ctx_get_error_buffer(self.ctx));
            if rc != 0 {
                let first = err.lines().next().unwrap_or("failed").to_string();
                return Err(Error::Firewall(first));
            }
            Ok(out)
        }
    }
}

unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        // SAFETY: ctx came from nft_ctx_new and is freed once.
        unsafe { nft_ctx_free(self.ctx) }
    }
}
