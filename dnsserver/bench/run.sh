#!/usr/bin/env bash
# Side-by-side DNS benchmark: `signpost serve` (the real binary, on a config
# file) against NSD and Knot serving the same zones, which signpost itself
# writes with `signpost zone`. dnsperf loads each server in turn, interleaved,
# over several rounds, for each query mix:
#
#   plain   EDNS, no options
#   do      DO bit set (what validating resolvers send)
#   cookie  DO bit and a client cookie (what BIND and dig send)
#   tcp     EDNS over TCP, pipelined on a few long connections
#   mix     three dnsperf at once: UDP with DO and cookie, UDP with DO, and
#           TCP at a tenth of the rate
#   sat-plain, sat-do, sat-cookie, sat-mix
#           the plain, do, cookie and mix queries with udpload (in this
#           directory) in dnsperf's place for UDP (the mix's TCP stays
#           dnsperf's). udpload sends and reads 32 queries per system call
#           with 160 outstanding, so the server's core saturates. dnsperf
#           makes a system call per query sent and per answer read, about
#           as much CPU per query as the server spends, so on two cores the
#           dnsperf rows measure dnsperf's cost under each server as much
#           as the server's own capacity; these rows measure the capacity.
#   signed  DO bit set, with the zones signed: signpost with dns.dnssec on
#           against Knot signing its copy itself (automatic signing, its
#           default policy); NSD, which does not sign, sits this one out.
#           Not in the default rows: ROWS=signed.
#
# For each it prints every round, the medians, the server CPU per query, the
# lost queries and the ratios signpost/NSD, signpost/Knot and signpost/best.
# Then, with every server on its default response rate limiting, it floods
# a large answer from one address and prints the amplification each allows
# (response bytes out per query byte in).
#
#   dnsserver/bench/run.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 10 s)
#   ROWS="plain tcp" dnsserver/bench/run.sh 3 5   some rows only
#   FLOOD=0 ...                                     skip the flood
#
# dnsperf runs as `dnsperf -T 2 -c 4 -q 100` (override with DNSPERF_ARGS),
# udpload as `udpload -w 160 -b 32` (UDPLOAD_ARGS): with 512 outstanding Knot
# dropped 240 queries a second, more than its socket buffer holds.
# With PIN=1 (the default on a machine with 2 or more cores) every server
# runs on CPU 0, with one worker (NSD server-count, Knot udp/tcp-workers;
# Go sizes signpost to the CPUs it may use), and dnsperf on CPU 1: the load
# generator then does not take turns with the server on the same cores, as
# on a real server whose queries come from the network, and rounds vary
# far less. PIN=0 lets the scheduler place everything on all cores.
# Needs the Debian packages dnsperf, nsd, knot and knot-dnsutils (kdig), and Go. CI does not run it:
# the figures depend on the machine. It exits 1 if signpost lost a query.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rounds=${1:-5}
secs=${2:-10}
rows=${ROWS:-plain do cookie tcp mix sat-plain sat-do sat-cookie sat-mix}
read -r -a perfargs <<<"${DNSPERF_ARGS:--T 2 -c 4 -q 100}"
read -r -a loadargs <<<"${UDPLOAD_ARGS:--w 160 -b 32}"
pin=${PIN:-$([ "$(nproc)" -ge 2 ] && echo 1 || echo 0)}
# onserver and onclient prefix a command to run it on the server's and
# the load generator's CPUs (taskset execs it: $! stays the server's pid);
# workers is how many workers a server gets.
onserver=() onclient=() workers=$(nproc)
if [ "$pin" = 1 ]; then
	onserver=(taskset -c 0) onclient=(taskset -c 1) workers=1
fi

for p in dnsperf nsd knotd kdig; do
	command -v "$p" >/dev/null || { echo "run.sh: $p not found; apt-get install dnsperf nsd knot knot-dnsutils" >&2; exit 1; }
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
		p=$((20000 + RANDOM % 12000)) # below the ephemeral ports (32768-)
		if ! ss -Hltun "sport = :$p" | grep -q . && ! grep -qx "$p" "$tmp/ports" 2>/dev/null; then
			echo "$p" >>"$tmp/ports"
			echo "$p"
			return
		fi
	done
}

(cd "$repo" && go build -o "$tmp/signpost" ./cmd/signpost && go build -o "$tmp/udpload" ./dnsserver/bench/udpload)

# One zone file per zone, as `signpost zone` prints them.
"$tmp/signpost" zone -config "$here/bench.toml" |
	awk -v dir="$tmp" '/^; zone / {f = dir "/" $3 "zone"} f {print > f}'
origins=$(cd "$tmp" && ls -- *zone | sed 's/zone$//')

# cputicks prints the user+system clock ticks used so far by pid and all
# its descendants (NSD's server processes are its grandchildren).
cputicks() {
	local total=0 p
	[ -r "/proc/$1/stat" ] && total=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat")
	for p in $(pgrep -P "$1" || true); do
		total=$((total + $(cputicks "$p")))
	done
	echo "$total"
}
hz=$(getconf CLK_TCK)

declare -A port pid
# start_signpost DIR LIMITED DNS runs signpost on bench.toml with this
# run's ports, self-signed (no CA), its state in DIR; LIMITED as for
# start_servers; DNS is added to [dns].
start_signpost() {
	local dir=$1 limited=$2 more=$3
	{
		sed -e "s|^listen = \\[\"127.0.0.1:5300\"\\]|listen = [\"127.0.0.1:${port[signpost]}\"]$more|" "$here/bench.toml"
		[ "$limited" = 1 ] || printf '\n[dns.rrl]\nrate = 0\n'
		printf '\n[http]\nlisten = "127.0.0.1:%s"\nplain_listen = "127.0.0.1:%s"\n' "$(freeport)" "$(freeport)"
		printf '\n[acme]\nmode = "self-signed"\nstorage = "%s"\n' "$dir/state"
	} >"$dir/signpost.toml"
	"${onserver[@]}" "$tmp/signpost" serve -config "$dir/signpost.toml" 2>"$dir/signpost.log" &
	pid[signpost]=$!
	pids+=($!)
}

# start_servers LIMITED starts signpost, NSD and Knot; LIMITED=1 leaves each
# on its default response rate limiting (Knot, which has none by default,
# gets its documented example, rate-limit 200 slip 2), LIMITED=0 turns it off
# for the throughput rows, since dnsperf's queries come from one address.
start_servers() {
	local limited=$1 dir="$tmp/run$1"
	mkdir -p "$dir/knot" "$dir/state"
	port[signpost]=$(freeport)
	port[nsd]=$(freeport)
	port[knot]=$(freeport)

	start_signpost "$dir" "$limited" ""

	{
		cat <<-EOF
			server:
			  ip-address: 127.0.0.1@${port[nsd]}
			  port: ${port[nsd]}
			  username: ""
			  chroot: ""
			  zonesdir: "$tmp"
			  database: ""
			  pidfile: "$dir/nsd.pid"
			  xfrdfile: "$dir/xfrd.state"
			  zonelistfile: "$dir/zone.list"
			  server-count: $workers
			  reuseport: yes
			  verbosity: 0
		EOF
		# Debian's NSD is built with RRL on (rrl-ratelimit 200, slip 2).
		[ "$limited" = 1 ] || printf '  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n'
		printf 'remote-control:\n  control-enable: no\n'
		for o in $origins; do printf 'zone:\n  name: "%s"\n  zonefile: "%szone"\n' "$o" "$o"; done
	} >"$dir/nsd.conf"
	"${onserver[@]}" nsd -d -c "$dir/nsd.conf" 2>"$dir/nsd.log" &
	pid[nsd]=$!
	pids+=($!)

	{
		printf 'server:\n  listen: 127.0.0.1@%s\n  rundir: "%s/knot"\n' "${port[knot]}" "$dir"
		printf '  udp-workers: %s\n  tcp-workers: %s\n' "$workers" "$workers"
		printf 'database:\n  storage: "%s/knot"\n' "$dir"
		printf 'log:\n  - target: stderr\n    any: warning\n'
		if [ "$limited" = 1 ]; then
			printf 'mod-rrl:\n  - id: default\n    rate-limit: 200\n    slip: 2\n'
			printf 'template:\n  - id: default\n    global-module: mod-rrl/default\n'
		fi
		printf 'zone:\n'
		for o in $origins; do printf '  - domain: "%s"\n    file: "%s/%szone"\n' "$o" "$tmp" "$o"; done
	} >"$dir/knot.conf"
	"${onserver[@]}" knotd -c "$dir/knot.conf" 2>"$dir/knot.log" &
	pid[knot]=$!
	pids+=($!)

	# Wait until each answers, over UDP and TCP.
	echo "chat.example.com SOA" >"$tmp/probe.txt"
	local s i m
	for s in signpost nsd knot; do
		for m in udp tcp; do
			for i in $(seq 50); do
				if dnsperf -m "$m" -s 127.0.0.1 -p "${port[$s]}" -d "$tmp/probe.txt" -n 1 -t 1 2>/dev/null | grep -q 'Queries completed: *1 '; then
					break
				fi
				[ "$i" = 50 ] && { echo "run.sh: $s does not answer $m on port ${port[$s]}" >&2; cat "$dir/$s.log" >&2; exit 1; }
				sleep 0.2
			done
		done
	done
}

stop_servers() {
	local s
	for s in signpost nsd knot; do [ -n "${pid[$s]:-}" ] && kill "${pid[$s]}" 2>/dev/null || true; done
	for s in signpost nsd knot; do [ -n "${pid[$s]:-}" ] && wait "${pid[$s]}" 2>/dev/null || true; done
	pid=()
}

# start_signed starts signpost with every zone signed and Knot signing its
# own copy of the zone files, both without rate limiting, and waits until
# each serves a signed SOA.
start_signed() {
	local dir="$tmp/signed"
	mkdir -p "$dir/knot" "$dir/state" "$dir/zones"
	port[signpost]=$(freeport)
	port[knot]=$(freeport)
	start_signpost "$dir" 0 '\ndnssec = true'

	cp "$tmp"/*zone "$dir/zones/"
	{
		printf 'server:\n  listen: 127.0.0.1@%s\n  rundir: "%s/knot"\n' "${port[knot]}" "$dir"
		printf '  udp-workers: %s\n  tcp-workers: %s\n' "$workers" "$workers"
		printf 'database:\n  storage: "%s/knot"\n' "$dir"
		printf 'log:\n  - target: stderr\n    any: warning\n'
		printf 'zone:\n'
		for o in $origins; do
			printf '  - domain: "%s"\n    file: "%s/zones/%szone"\n    dnssec-signing: on\n    zonefile-sync: -1\n' "$o" "$dir" "$o"
		done
	} >"$dir/knot.conf"
	"${onserver[@]}" knotd -c "$dir/knot.conf" 2>"$dir/knot.log" &
	pid[knot]=$!
	pids+=($!)

	local s i
	for s in signpost knot; do
		for i in $(seq 50); do
			if kdig @127.0.0.1 -p "${port[$s]}" +dnssec +norec +time=1 chat.example.com SOA 2>/dev/null | grep -q 'RRSIG'; then
				break
			fi
			[ "$i" = 50 ] && { echo "run.sh: $s does not serve a signed SOA on port ${port[$s]}" >&2; cat "$dir/$s.log" >&2; exit 1; }
			sleep 0.2
		done
	done
}

cookie=10:0102030405060708
# perf S ARGS... runs one dnsperf against server S and prints "qps lost completed".
perf() {
	local s=$1
	shift
	"${onclient[@]}" dnsperf -s 127.0.0.1 -p "${port[$s]}" -d "$here/queries.txt" -l "$secs" "${perfargs[@]}" "$@" 2>&1 |
		awk '/Queries completed:/ {c = $3} /Queries lost:/ {l = $3} /Queries per second:/ {q = $4} END {print q, l, c}'
}

# load S ARGS... runs udpload against server S, one per server worker so
# that each worker's socket gets queries (the kernel spreads them by source
# port), and prints "qps lost completed" summed over them.
load() {
	local s=$1 i out=$tmp/load.$BASHPID
	shift
	for i in $(seq "$workers"); do
		"${onclient[@]}" "$tmp/udpload" -s 127.0.0.1 -p "${port[$s]}" -d "$here/queries.txt" -l "$secs" "${loadargs[@]}" "$@" >"$out.$i" 2>&1 &
	done
	wait
	cat "$out".* | awk '/Queries completed:/ {c += $3} /Queries lost:/ {l += $3} /Queries per second:/ {q += $4} END {print q, l, c}'
	rm -f "$out".*
}

# row R S runs row R against server S and prints "qps lost cpu_us_per_query".
row() {
	local r=$1 s=$2 t0 t1 out
	t0=$(cputicks "${pid[$s]}")
	case $r in
	plain) out=$(perf "$s" -e) ;;
	do | signed) out=$(perf "$s" -D) ;;
	cookie) out=$(perf "$s" -D -E "$cookie") ;;
	tcp) out=$(perf "$s" -e -m tcp) ;;
	sat-plain) out=$(load "$s" -e) ;;
	sat-do) out=$(load "$s" -D) ;;
	sat-cookie) out=$(load "$s" -D -E "$cookie") ;;
	mix | sat-mix)
		# Unbound and Knot Resolver send DO; BIND sends DO and a cookie;
		# truncated answers and some forwarders come over TCP.
		local udp=perf
		[ "$r" = sat-mix ] && udp=load
		"$udp" "$s" -D -E "$cookie" >"$tmp/mix1" &
		local p1=$!
		"$udp" "$s" -D >"$tmp/mix2" &
		local p2=$!
		perf "$s" -D -m tcp -Q 5000 >"$tmp/mix3" &
		local p3=$!
		wait "$p1" "$p2" "$p3"
		out=$(cat "$tmp/mix1" "$tmp/mix2" "$tmp/mix3" | awk '{q += $1; l += $2; c += $3} END {print q, l, c}')
		;;
	esac
	t1=$(cputicks "${pid[$s]}")
	awk -v o="$out" -v d=$((t1 - t0)) -v hz="$hz" 'BEGIN {split(o, a, " "); printf "%.0f %d %.2f\n", a[1], a[2], a[3] ? d * 1e6 / hz / a[3] : 0}'
}

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
range() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%s-%s", lo, hi}'; }

# interleave R SERVER... runs row R against each server in turn, for
# every round, the order rotating from round to round; it prints each run
# and the medians, and leaves the figures in qps, cpu and lost by server.
interleave() {
	local r=$1 i n s q l c
	shift
	local -a all=("$@") order
	n=${#all[@]}
	declare -gA qps=() lost=() cpu=()
	for i in $(seq "$rounds"); do
		order=("${all[@]:$((i % n))}" "${all[@]:0:$((i % n))}")
		for s in "${order[@]}"; do
			read -r q l c <<<"$(row "$r" "$s")"
			printf 'round %d  %-8s %9.0f qps  lost %-6s %5.2f us/query\n' "$i" "$s" "$q" "$l" "$c"
			qps[$s]+="$q "
			cpu[$s]+="$c "
			lost[$s]=$((${lost[$s]:-0} + l))
		done
	done
	for s in "${all[@]}"; do
		printf 'median %-8s %9.0f qps (range %s)  lost %d  %.2f us/query (range %s)\n' "$s" \
			"$(median "${qps[$s]}")" "$(range "${qps[$s]}")" "${lost[$s]}" "$(median "${cpu[$s]}")" "$(range "${cpu[$s]}")"
	done
}

servers=(signpost nsd knot)
splost=0
signed=0
unsigned_rows=
for r in $rows; do
	if [ "$r" = signed ]; then signed=1; else unsigned_rows+="$r "; fi
done
start_servers 0
echo "signpost $("$tmp/signpost" version), $(nsd -v 2>&1 | head -1), $(knotd --version); $(nproc) cores, $([ "$pin" = 1 ] && echo "servers on CPU 0 with one worker, dnsperf on CPU 1" || echo "unpinned, $workers workers")"
echo "dnsperf ${perfargs[*]} -l $secs -d dnsserver/bench/queries.txt (sat- rows: udpload ${loadargs[*]}, $workers at once); $rounds rounds per row, servers interleaved"
summary=()
for r in $unsigned_rows; do
	echo
	echo "== $r"
	interleave "$r" "${servers[@]}"
	sp=$(median "${qps[signpost]}")
	n=$(median "${qps[nsd]}")
	k=$(median "${qps[knot]}")
	line=$(awk -v r="$r" -v a="$sp" -v n="$n" -v k="$k" -v l="${lost[signpost]}" \
		-v cs="$(median "${cpu[signpost]}")" -v ck="$(median "${cpu[knot]}")" -v cn="$(median "${cpu[nsd]}")" \
		'BEGIN {b = n > k ? n : k; printf "%-10s signpost %7.0f  nsd %7.0f  knot %7.0f qps   /nsd %.2f  /knot %.2f  /best %.2f   us/query signpost %.2f nsd %.2f knot %.2f   signpost lost %d", r, a, n, k, a/n, a/k, a/b, cs, cn, ck, l}')
	echo "ratio $line"
	summary+=("$line")
	splost=$((splost + ${lost[signpost]}))
done
stop_servers

if [ "$signed" = 1 ]; then
	echo
	echo "== signed"
	start_signed
	interleave signed signpost knot
	line=$(awk -v a="$(median "${qps[signpost]}")" -v k="$(median "${qps[knot]}")" -v l="${lost[signpost]}" \
		-v cs="$(median "${cpu[signpost]}")" -v ck="$(median "${cpu[knot]}")" \
		'BEGIN {printf "signed     signpost %7.0f  knot %7.0f qps (both signing, DO set)   /knot %.2f   us/query signpost %.2f knot %.2f   signpost lost %d", a, k, a/k, cs, ck, l}')
	echo "ratio $line"
	summary+=("$line")
	splost=$((splost + ${lost[signpost]}))
	stop_servers
fi

if [ "${FLOOD:-1}" = 1 ]; then
	echo
	echo "== flood: one address asks for a large answer as fast as it can, each server on its default rate limiting"
	start_servers 1
	echo "big.chat.example.com TXT" >"$tmp/big.txt"
	for s in "${servers[@]}"; do
		# A fixed sending rate with room for every query in flight, so that
		# dropped replies do not slow the sender down, as a spoofer's would not.
		out=$("${onclient[@]}" dnsperf -s 127.0.0.1 -p "${port[$s]}" -d "$tmp/big.txt" -l "$secs" -e -c 1 -Q 10000 -q 30000 -t 1 2>&1)
		awk -v s="$s" '
			/Queries sent:/ {sent = $3}
			/Queries completed:/ {done = $3}
			/Average packet size:/ {req = $5; sub(/,/, "", req); resp = $7}
			END {printf "flood %-8s sent %d answered %d (%.1f%%)  request %d B, response %d B  amplification %.2f\n", s, sent, done, 100*done/sent, req, resp, done*resp/(sent*req)}' <<<"$out"
	done
	stop_servers
fi

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
if [ "$splost" != 0 ]; then
	echo "run.sh: signpost lost $splost queries" >&2
	exit 1
fi
