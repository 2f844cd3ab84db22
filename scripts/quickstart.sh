#!/usr/bin/env bash
# The README's first command: install what is needed, build, run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release
bash scripts/demo.sh target/x86_64-unknown-linux-gnu/release/rete
