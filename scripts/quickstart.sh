#!/usr/bin/env bash
# The README's first command: install what is needed, build, run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
source scripts/target.sh
cargo build --profile dist --bin rete
bash scripts/demo.sh "$RETE_DIST_DIR/rete"
