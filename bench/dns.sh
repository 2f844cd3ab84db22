#!/bin/bash
# rete's resolver against aardvark-dns (see docs/benchmarks.md, "DNS"), as
# root:
#
#   sudo bench/dns.sh                  # 100 containers, 3 runs of 10 s
#   sudo bench/dns.sh --runs 5 --seconds 5 --n 300
#
# Options are passed to bench_dns: --n N (containers, default 100),
# --seconds S, --runs R, --rate QPS (latency test, default 5000),
# --churn-rate QPS (default 1000), --threads T (dnsperf -T, default 1),
# --pin (dnsperf on CPU 0, the servers on
# CPU 1), --aardvark PATH; --out DIR (where the
# report goes; default bench/results).
#
# Needs dnsperf and aardvark-dns (apt-get install dnsperf aardvark-dns).
# Everything happens in namespaces created under a temporary directory; the
# root namespace and /run/netns are never touched, and no query leaves the
# lab (both servers' upstream is 127.0.0.1 of the lab's host namespace,
# where nothing listens, and only local names are asked). On exit, also on
# failure or Ctrl-C, the servers are ended, every namespace pinned under
# that directory is unpinned and the directory removed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/results
ARGS=()
while [ $# -gt 0 ]; do
    case $1 in
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done

[ "$(id -u)" = 0 ] || { echo "run as root: network namespaces need it" >&2; exit 1; }
for tool in ip ss cargo findmnt unshare dnsperf; do
    command -v $tool >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ -x /usr/lib/podman/aardvark-dns ] || [[ " ${ARGS[*]-} " == *" --aardvark "* ]] \
    || { echo "missing /usr/lib/podman/aardvark-dns (apt-get install aardvark-dns)" >&2; exit 1; }

LAB=$(mktemp -d /tmp/rete-bench-dns.XXXXXX)
NETNS_BEFORE=$(ip netns list | sort)

cleanup() {
    rc=$?
    trap - EXIT INT TERM
    set +eo pipefail
    # Servers a killed benchmark left behind: aardvark-dns by its pid file;
    # rete's resolver ends by itself once its state dir is gone.
    for pidfile in "$LAB"/aardvark/aardvark.pid "$LAB"/rete/run/dns.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
    done
    findmnt -rn -o TARGET | grep "^$LAB/" | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$LAB"
    if [ "$(ip netns list | sort)" != "$NETNS_BEFORE" ]; then
        echo "WARNING: ip netns list differs from before the run" >&2
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$ROOT"
source scripts/target.sh
cargo build --release --example bench_dns
cargo build --profile dist --bin rete
cp "$RETE_DIST_DIR"/rete "$LAB/rete-bin"
mkdir -p "$OUT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
REPORT=$OUT/$STAMP-dns.md
{
    echo "# rete DNS benchmark run $STAMP"
    echo
    echo "- command: bench/dns.sh ${ARGS[*]-}"
    dirty=""
    if ! git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null; then
        dirty=" + uncommitted changes"
    fi
    echo "- rete: commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$dirty, binary sha256 $(sha256sum "$LAB/rete-bin" | cut -c1-16)"
    echo "- dnsperf: $(dnsperf -H 2>&1 | sed -n 's/^Version //p' | head -n1)"
    echo
} > "$REPORT"
"$RETE_BIN_DIR"/examples/bench_dns --rete "$LAB/rete-bin" --dir "$LAB" "${ARGS[@]}" | tee -a "$REPORT"
echo "results: $REPORT"
