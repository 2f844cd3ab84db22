//! Links the `rete` binary as a position-dependent executable.
//!
//! rete runs as many short processes (one per CNI or Podman call, one per
//! CLI command), so its start-up is part of every operation's latency. A
//! position-independent executable has its ~16 000 relative relocations
//! applied by the dynamic loader at every start, writing to (and so
//! copying) every page of its relocated data; linked at a fixed address it
//! starts with none, about 0.5 ms sooner on the machines rete is measured
//! on. Address-space randomisation of the executable's own image is lost;
//! that of its stack, heap and libraries is not.

fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
