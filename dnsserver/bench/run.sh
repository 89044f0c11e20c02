#!/usr/bin/env bash
# Side-by-side DNS benchmark: signpost's dnsserver against NSD (and Knot,
# when knotd is installed) serving the same zones on loopback, measured with
# dnsperf in interleaved rounds. Prints each round, the medians and the
# ratios, and fails if signpost lost a query.
#
#   dnsserver/bench/run.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 10 s)
#
# Environment: EDNS=0 sends queries without EDNS (default: with, as
# resolvers do); CLIENTS (default 8) is dnsperf's number of sockets;
# OUTSTANDING (default 200) its queries in flight.
#
# Needs the Debian packages dnsperf and nsd (knot optional) and Go. CI does
# not run it: the figures depend on the machine.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rounds=${1:-5}
secs=${2:-10}
clients=${CLIENTS:-8}
outstanding=${OUTSTANDING:-200}
edns=()
[ "${EDNS:-1}" = 1 ] && edns=(-e)

for p in dnsperf nsd; do
	command -v "$p" >/dev/null || { echo "run.sh: $p not found; apt-get install $p" >&2; exit 1; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

# freeport prints a port nothing listens on (UDP or TCP).
freeport() {
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		if ! ss -Hltun "sport = :$p" | grep -q .; then echo "$p"; return; fi
	done
}

(cd "$repo" && go build -o "$tmp/bench" ./dnsserver/bench)
"$tmp/bench" -config "$here/bench.toml" -zones "$tmp"
origins=$(cd "$tmp" && ls -- *zone | sed 's/zone$//')

sp_port=$(freeport)
nsd_port=$(freeport)
while [ "$nsd_port" = "$sp_port" ]; do nsd_port=$(freeport); done

"$tmp/bench" -config "$here/bench.toml" -listen "127.0.0.1:$sp_port" 2>"$tmp/signpost.log" &
pids+=($!)

cat >"$tmp/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.1@$nsd_port
  port: $nsd_port
  username: ""
  chroot: ""
  zonesdir: "$tmp"
  database: ""
  pidfile: "$tmp/nsd.pid"
  xfrdfile: "$tmp/xfrd.state"
  zonelistfile: "$tmp/zone.list"
  server-count: $(nproc)
  reuseport: yes
  verbosity: 0
  # Response rate limiting (on by default in Debian's build) would drop
  # most of a load test's replies.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
EOF
for o in $origins; do printf 'zone:\n  name: "%s"\n  zonefile: "%szone"\n' "$o" "$o" >>"$tmp/nsd.conf"; done
nsd -d -c "$tmp/nsd.conf" 2>"$tmp/nsd.log" &
pids+=($!)

servers=(signpost nsd)
declare -A port=([signpost]=$sp_port [nsd]=$nsd_port)
if command -v knotd >/dev/null; then
	knot_port=$(freeport)
	mkdir -p "$tmp/knot"
	{
		printf 'server:\n  listen: 127.0.0.1@%s\n  rundir: "%s/knot"\n' "$knot_port" "$tmp"
		printf 'database:\n  storage: "%s/knot"\n' "$tmp"
		printf 'log:\n  - target: stderr\n    any: warning\n'
		printf 'zone:\n'
		for o in $origins; do printf '  - domain: "%s"\n    file: "%s/%szone"\n' "$o" "$tmp" "$o"; done
	} >"$tmp/knot.conf"
	knotd -c "$tmp/knot.conf" 2>"$tmp/knot.log" &
	pids+=($!)
	servers+=(knot)
	port[knot]=$knot_port
fi

# Wait until each server answers (dnsperf itself is the probe).
echo "chat.example.com SOA" >"$tmp/probe.txt"
for s in "${servers[@]}"; do
	for i in $(seq 50); do
		if dnsperf -s 127.0.0.1 -p "${port[$s]}" -d "$tmp/probe.txt" -n 1 -t 1 2>/dev/null | grep -q 'Queries completed: *1 '; then
			break
		fi
		[ "$i" = 50 ] && { echo "run.sh: $s does not answer on port ${port[$s]}" >&2; cat "$tmp/$s.log" >&2; exit 1; }
		sleep 0.2
	done
done

echo "dnsperf -l $secs -c $clients -q $outstanding ${edns[*]} -d dnsserver/bench/queries.txt, $rounds rounds, $(nproc) cores"
declare -A qps lost
for r in $(seq "$rounds"); do
	# Rotate the order so no server always runs first.
	order=("${servers[@]:$((r % ${#servers[@]}))}" "${servers[@]:0:$((r % ${#servers[@]}))}")
	for s in "${order[@]}"; do
		out=$(dnsperf -s 127.0.0.1 -p "${port[$s]}" -d "$here/queries.txt" -l "$secs" -c "$clients" -q "$outstanding" "${edns[@]}" 2>&1)
		q=$(awk '/Queries per second:/ {print $4}' <<<"$out")
		l=$(awk '/Queries lost:/ {print $3}' <<<"$out")
		printf 'round %d  %-8s %12.0f qps  lost %s\n' "$r" "$s" "$q" "$l"
		qps[$s]+="$q "
		lost[$s]=$((${lost[$s]:-0} + l))
	done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
for s in "${servers[@]}"; do
	printf 'median %-8s %12.0f qps  lost %d\n' "$s" "$(median "${qps[$s]}")" "${lost[$s]}"
done
sp=$(median "${qps[signpost]}")
for s in "${servers[@]:1}"; do
	printf 'ratio signpost/%s %.2f\n' "$s" "$(awk -v a="$sp" -v b="$(median "${qps[$s]}")" 'BEGIN {print a/b}')"
done
if [ "${lost[signpost]}" != 0 ]; then
	echo "run.sh: signpost lost ${lost[signpost]} queries" >&2
	exit 1
fi
