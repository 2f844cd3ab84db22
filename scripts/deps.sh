#!/usr/bin/env bash
# Installs what rete needs to build, run and test, from Debian.
set -euo pipefail
pkgs=(nftables iproute2 busybox-static util-linux procps gcc pkg-config)
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
