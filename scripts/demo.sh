#!/usr/bin/env bash
# rete's main job, shown end to end inside throwaway namespaces (the
# machine's own network is left alone): a "host" namespace where rete runs,
# an "outside" namespace standing for the rest of the world on the host's
# uplink, a network, two containers, a published port, traffic between them.
set -euo pipefail
if [ -z "${1:-}" ]; then
    source "$(dirname "$0")/target.sh"
fi
rete=$(realpath "${1:-$RETE_BIN_DIR/rete}")
work=$(mktemp -d /tmp/rete-demo.XXXXXX)
host=rete-demo-host-$$
outside=rete-demo-outside-$$
export RETE_STATE_DIR=$work/state RETE_RUN_DIR=$work/run RETE_NETNS_DIR=$work/netns

cleanup() {
    set +e
    for ns in "$work"/netns/*; do [ -e "$ns" ] && umount "$ns" 2>/dev/null; done
    ip netns delete "$host" 2>/dev/null
    ip netns delete "$outside" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
in_host() { nsenter --net="/run/netns/$host" "$@"; }
r() { say "rete $*"; in_host "$rete" "$@"; }

ip netns add "$host"
ip netns add "$outside"
ip -n "$host" link set lo up
ip -n "$host" link add uplink type veth peer name wan netns "$outside"
ip -n "$host" addr add 192.0.2.1/24 dev uplink
ip -n "$host" link set uplink up
ip -n "$host" route add default via 192.0.2.2
ip -n "$outside" addr add 192.0.2.2/24 dev wan
ip -n "$outside" link set wan up
ip -n "$outside" link set lo up

r network create web --subnet 10.141.0.0/24
r create a --network web -p 8080:80
r create b --network web
r ls
r port a

say "rete run -d a -- busybox httpd -f -p 80   (a web server in container a)"
mkdir -p "$work/srv"
echo "hello from container a" > "$work/srv/index.html"
in_host "$rete" run -d a -- busybox httpd -f -p 80 -h "$work/srv" >/dev/null
sleep 0.3

r exec b -- busybox wget -q -O - http://10.141.0.2/
say "(from the outside namespace) wget http://192.0.2.1:8080/   (the published port)"
ip netns exec "$outside" busybox wget -q -O - http://192.0.2.1:8080/
r exec b -- busybox ping -c 1 -W 1 192.0.2.2

r rm a b
r network rm web
say "done: the namespaces and everything in them are gone"
