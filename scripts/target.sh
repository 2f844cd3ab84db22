# Sourced by the scripts that build rete: chooses the target it is built
# for and exports CARGO_BUILD_TARGET, RETE_BIN_DIR (where the release
# binaries land: tests, benchmark programs) and RETE_DIST_DIR (where the
# dist profile's rete lands: the one installed and measured; Cargo.toml).
#
# rete is linked statically against musl where the toolchain has the musl
# target (scripts/deps.sh adds it): glibc's start-up alone runs about a
# hundred CPUID instructions, each a trap to the hypervisor on a virtual
# machine (4-7 us on the machines measured), up to ~0.6 ms of every rete
# process; with mimalloc as the allocator (src/main.rs) a create is ~0.4 ms
# faster than a static glibc build (docs/benchmarks.md).
# Without the musl target (a toolchain without rustup) rete is linked
# statically against glibc, as before.
if [ -d "$(rustc --print sysroot 2>/dev/null)/lib/rustlib/x86_64-unknown-linux-musl/lib" ] &&
    command -v musl-gcc >/dev/null; then
    export CARGO_BUILD_TARGET=x86_64-unknown-linux-musl
else
    echo "rete: the musl target is not installed (rustup target add x86_64-unknown-linux-musl; apt-get install musl-tools); building against glibc" >&2
    export CARGO_BUILD_TARGET=x86_64-unknown-linux-gnu
fi
export RETE_BIN_DIR=target/$CARGO_BUILD_TARGET/release
export RETE_DIST_DIR=target/$CARGO_BUILD_TARGET/dist
