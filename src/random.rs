//! Random bytes straight from the kernel (getrandom(2)), for the few a
//! rete process needs: interface names, MACs, IDs, journal names.
//!
//! A user-space generator would first seed itself and probe the CPU for
//! its vector units; on a virtual machine each CPUID instruction of that
//! probe traps to the hypervisor (tens of µs per process, measured with
//! `perf` on a create), for a handful of bytes.

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let mut filled = 0;
    while filled < N {
        let rest = &mut out[filled..];
        // SAFETY: the pointer and length describe `rest`, which the call
        // only writes within.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // getrandom(2) fails only on a kernel older than 3.17 or a
            // seccomp filter that forbids it: no randomness to be had.
            panic!("getrandom(2): {}", std::io::Error::last_os_error());
        }
    }
    out
}

/// A random 64-bit number.
pub fn u64() -> u64 {
    u64::from_ne_bytes(bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_differ_between_calls() {
        // 2^-128 chance of a false failure.
        assert_ne!(super::bytes::<16>(), super::bytes::<16>());
    }

    #[test]
    fn large_requests_are_filled() {
        let b = super::bytes::<4096>();
        assert!(b.iter().filter(|&&x| x != 0).count() > 3000);
    }
}
