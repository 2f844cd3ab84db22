#!/usr/bin/env bash
# Installs what rete needs to build, run and test, from Debian.
set -euo pipefail
# Build: gcc, musl-tools (musl-gcc, for SQLite's C in a musl build), pkg-config, protobuf-compiler (the etcd client's gRPC code).
# Run: nftables, iproute2 (tests inspect with ip, tc, bridge), procps.
# Real clients and peers the tests drive: podman, runc, netavark,
# containerd, containernetworking-plugins (with iptables for portmap),
# bind9-dnsutils (dig), etcd-server (the multi-host tests), busybox-static
# (images and the demo's tools).
pkgs=(gcc musl-tools pkg-config protobuf-compiler nftables iproute2 util-linux procps
      busybox-static podman runc netavark containerd containernetworking-plugins
      iptables bind9-dnsutils etcd-server)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
    # Debian's cargo may be older than rete's dependencies need (Rust 1.85+).
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q cargo
fi
# rete links statically against musl (scripts/target.sh says why); rustup
# installs the target's standard library once. Without rustup, or offline,
# the build falls back to glibc.
if command -v rustup >/dev/null && ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    rustup target add x86_64-unknown-linux-musl || echo "rete: could not add the musl target; building against glibc" >&2
fi
