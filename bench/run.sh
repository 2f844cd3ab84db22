#!/bin/bash
# Runs rete's benchmarks (see docs/benchmarks.md) as root:
#
#   sudo bench/run.sh                 # throughput, attach/detach at N=300,
#                                     # parallel CNI ADDs, podman run
#   sudo bench/run.sh --n 1000        # 1000 containers per peer (~25-30 min)
#   sudo bench/run.sh --attach-only   # or --throughput-only, --parallel-only,
#                                     # --podman-only (these combine)
#
# Options: --n N (default 300, at most 1023), --peers LIST (attach/detach;
# default rete,rete-own,rete-cni,rete-netavark,netavark,cni,floor), --seconds S and
# --runs R (throughput; default 5 and 3), --count C and --reps R (parallel
# ADDs; default 100 and 3), --podman-runs R (default 15), --out DIR (where
# results go; default bench/results).
#
# Everything happens in namespaces created under a temporary directory; the
# root namespace and /run/netns are never touched (Podman runs in a private
# mount namespace with lab directories over /run and rete's defaults). On
# exit, also on failure or Ctrl-C, every namespace pinned under that
# directory is unpinned and the directory removed; the script then checks
# that `ip netns list` and the root namespace's links are as they were.
set -euo pipefail

N=300
PEERS=rete,rete-own,rete-cni,rete-netavark,netavark,cni,floor
SECONDS_PER_TEST=5
RUNS=3
COUNT=100
REPS=3
PODMAN_RUNS=15
ONLY=""
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/results

while [ $# -gt 0 ]; do
    case $1 in
        --n) N=$2; shift 2 ;;
        --peers) PEERS=$2; shift 2 ;;
        --seconds) SECONDS_PER_TEST=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --count) COUNT=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        --podman-runs) PODMAN_RUNS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --attach-only) ONLY="$ONLY attach"; shift ;;
        --throughput-only) ONLY="$ONLY throughput"; shift ;;
        --parallel-only) ONLY="$ONLY parallel"; shift ;;
        --podman-only) ONLY="$ONLY podman"; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
PARTS=${ONLY:-throughput attach parallel podman}
part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

[ "$(id -u)" = 0 ] || { echo "run as root: network namespaces need it" >&2; exit 1; }
TOOLS="ip cargo findmnt"
part throughput && TOOLS="$TOOLS iperf3"
for tool in $TOOLS; do
    command -v $tool >/dev/null || { echo "missing $tool (apt-get install -y $tool)" >&2; exit 1; }
done

LAB=$(mktemp -d /tmp/rete-bench.XXXXXX)
NETNS_BEFORE=$(ip netns list | sort)
LINKS_BEFORE=$(ip -o link show | awk -F': ' '{print $2}' | sort)

cleanup() {
    rc=$?
    trap - EXIT INT TERM
    set +eo pipefail
    # End helpers a program under test left running for the lab (rete's
    # resolver, say), found by their RETE_RUN_DIR, by process id.
    # Podman's processes (conmon, cleanup) by their CONTAINERS_CONF.
    for p in /proc/[0-9]*; do
        if tr '\0' '\n' 2>/dev/null <"$p/environ" | grep -q -e "^RETE_RUN_DIR=$LAB/" -e "^CONTAINERS_CONF=$LAB/"; then
            kill "${p#/proc/}" 2>/dev/null
        fi
    done
    # Unpin whatever a killed benchmark left pinned under the lab.
    findmnt -rn -o TARGET | grep "^$LAB/" | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$LAB"
    # The benchmarks never use /run/netns or the root namespace; anything
    # that differs was done by another process on the machine, or is a bug.
    added=$(comm -13 <(echo "$NETNS_BEFORE") <(ip netns list | sort) | tr '\n' ' ')
    [ -z "$added" ] || echo "note: namespaces added to ip netns list during the run (not by the benchmark, which does not use /run/netns): $added" >&2
    added=$(comm -13 <(echo "$LINKS_BEFORE") <(ip -o link show | awk -F': ' '{print $2}' | sort) | tr '\n' ' ')
    [ -z "$added" ] && echo "root namespace: no new links" >&2 || echo "WARNING: new links in the root namespace: $added" >&2
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$ROOT"
source scripts/target.sh
cargo build --release --example bench_attach --example bench_throughput \
    --example bench_parallel --example bench_podman
# rete as installed: the dist profile (Cargo.toml).
cargo build --profile dist --bin rete
# A private copy: a concurrent rebuild cannot change the binary mid-run.
cp "$RETE_DIST_DIR"/rete "$LAB/rete"
mkdir -p "$OUT"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
REPORT=$OUT/$STAMP.md
{
    echo "# rete benchmark run $STAMP"
    echo
    echo "- command: bench/run.sh --n $N --peers $PEERS --seconds $SECONDS_PER_TEST --runs $RUNS --count $COUNT --reps $REPS --podman-runs $PODMAN_RUNS$(for p in $ONLY; do printf ' --%s-only' "$p"; done)"
    dirty=""
    if ! git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null \
        || [ -n "$(git -C "$ROOT" ls-files --others --exclude-standard -- src 2>/dev/null)" ]; then
        dirty=" + uncommitted changes in src/"
    fi
    echo "- rete: commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$dirty, binary sha256 $(sha256sum "$LAB/rete" | cut -c1-16)"
    echo "- nproc: $(nproc), kernel: $(uname -r)"
    echo
} > "$REPORT"

# Throughput first: the attach run ends by freeing thousands of namespaces,
# work the kernel does in the background that would disturb iperf3.
if part throughput; then
    "$RETE_BIN_DIR"/examples/bench_throughput --seconds "$SECONDS_PER_TEST" --runs "$RUNS" \
        --rete "$LAB/rete" --dir "$LAB/throughput" | tee -a "$REPORT"
    echo >> "$REPORT"
fi
if part attach; then
    "$RETE_BIN_DIR"/examples/bench_attach --n "$N" --peers "$PEERS" \
        --rete "$LAB/rete" --dir "$LAB/attach" --csv "$OUT/$STAMP-attach.csv" | tee -a "$REPORT"
    echo >> "$REPORT"
fi
if part parallel; then
    "$RETE_BIN_DIR"/examples/bench_parallel --count "$COUNT" --reps "$REPS" \
        --rete "$LAB/rete" --dir "$LAB/parallel" --csv "$OUT/$STAMP-parallel.csv" | tee -a "$REPORT"
    echo >> "$REPORT"
fi
if part podman; then
    # Its lab (a private mount namespace's directories) goes under $LAB too.
    TMPDIR=$LAB "$RETE_BIN_DIR"/examples/bench_podman --runs "$PODMAN_RUNS" \
        --rete "$LAB/rete" --csv "$OUT/$STAMP-podman.csv" | tee -a "$REPORT"
fi
echo "results: $REPORT"
