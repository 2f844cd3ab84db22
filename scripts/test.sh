#!/usr/bin/env bash
# The README's second command (and what CI runs): lint, then every test.
# Integration tests need root: they build throwaway network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
source scripts/target.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --release
