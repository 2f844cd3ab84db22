//! The `rete` command: a thin frontend over the engine.

mod cli;
mod cni;
mod netavark;
#[cfg(target_env = "gnu")]
mod nss;
#[cfg(target_env = "musl")]
mod sqlite_alloc;

// musl's allocator hands freed memory back to the kernel at once (an mmap
// and a munmap for every netlink buffer), which made a create ~0.4 ms
// slower than with glibc; mimalloc keeps freed memory for reuse
// (docs/benchmarks.md).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    #[cfg(target_env = "musl")]
    sqlite_alloc::use_mimalloc();
    #[cfg(target_env = "gnu")]
    nss::use_built_in_modules();
    // Installed as `netavark` (a link to this binary), rete is Podman's
    // network backend.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some("netavark".as_ref()) {
        exit(netavark::main());
    }
    // Installed as a CNI plugin, rete is called with the CNI_* environment
    // and no arguments; as `rete-ipam` (a link to this binary) it is only
    // ever a plugin, serving IPAM.
    let name = std::path::Path::new(&argv0).file_name().unwrap_or_default();
    if name == "rete-ipam" {
        exit(cni::main(cni::Kind::Ipam));
    }
    if called_as_plugin() {
        exit(cni::main(cni::Kind::Rete));
    }
    exit(cli::main());
}

/// Ends the process with `code` once stdout is flushed, past the C
/// library's exit handlers: there mimalloc hands all its memory back to the
/// kernel, a munmap per segment, which the kernel does anyway for a process
/// that ends. Everything of rete's own was dropped before `code` came back.
fn exit(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: _exit ends the process; nothing runs after it.
    unsafe { libc::_exit(code) }
}

/// Whether a runtime called this binary as a CNI plugin: CNI_COMMAND is set,
/// or, with no arguments, another variable of the CNI environment is (a
/// runtime that forgot CNI_COMMAND gets the spec's error, not CLI usage).
fn called_as_plugin() -> bool {
    if std::env::var_os("CNI_COMMAND").is_some() {
        return true;
    }
    std::env::args_os().len() == 1
        && [
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_PATH",
            "CNI_ARGS",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}
