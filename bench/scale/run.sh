#!/usr/bin/env bash
# Scale benchmark: `signpost serve` with N server names in N zones (a
# hosting provider, scenario S4), written by bench/scale/manyzones, in
# self-signed mode, beside Knot loading the same N zones from
# `signpost zone`. For each N it prints one row of:
#
#   validate     wall time of `signpost validate` (min-max of 3 runs)
#   dns, https   from starting `signpost serve` to the first DNS answer
#                (SOA of the last zone) and to the first HTTPS answer
#   reload       from SIGHUP, after a one-line change in one zone, to the
#                "reloaded" log line, while dnsperf queries all zones at a
#                steady rate; lost is the queries dnsperf saw no answer to
#   rss          resident memory idle (after start-up) and after traffic
#   qps          dnsperf over queries spread across all zones, and its ratio
#                to the same kinds of queries against N = 1 in this run
#   hs/s         full TLS handshakes per second, the names taken in turn,
#                once every name has its certificate
#   axfr         time to transfer the catalog zone (RFC 9432) with TSIG
#   term         SIGTERM in the middle of a reload and of start-up: time
#                until the process has exited
#   knot         knotd on the same zone files: start to the last zone's SOA,
#                `knotc reload` of the changed zone to its new record, RSS,
#                and its qps as signpost's, against a Knot serving N = 1
#
#   bench/scale/run.sh                  N = 100, 1000, 10000; 3 rounds of 5 s
#   NS="100 1000" SECS=3 ROUNDS=5 bench/scale/run.sh
#
# Needs the Debian packages dnsperf, knot, knot-dnsutils and curl, and Go.
# CI does not run it: the figures depend on the machine. It exits 1 if
# signpost lost a query during a reload.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
ns=${NS:-100 1000 10000}
secs=${SECS:-5}
rounds=${ROUNDS:-3}
for p in dnsperf knotd knotc kdig curl; do
	command -v "$p" >/dev/null || { echo "run.sh: $p not found; apt-get install dnsperf knot knot-dnsutils curl" >&2; exit 1; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "run.sh: line $LINENO: $BASH_COMMAND failed" >&2' ERR

(cd "$repo" && go build -o "$tmp/signpost" ./cmd/signpost && go build -o "$tmp/manyzones" ./bench/scale/manyzones &&
	go build -o "$tmp/hsload" ./httpserver/bench/hsload)

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
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
rss() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
range() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%s-%s", lo, hi}'; }
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR] = $1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }

origin() { printf 'tenant%05d.example' "$1"; }
# answers PORT NAME TYPE [RDATA] succeeds once the server at PORT answers
# NAME TYPE (with RDATA, if given).
answers() {
	local out
	# Over TCP: refused at once until the server listens, and answered as
	# soon as it serves (a UDP query unanswered costs kdig a whole timeout).
	out=$(kdig @127.0.0.1 -p "$1" +tcp +timeout=5 +retry=0 +short "$2" "$3" 2>/dev/null) || return 1
	[ -n "$out" ] && { [ -z "${4:-}" ] || grep -qx "$4" <<<"$out"; }
}
# waitfor SECONDS COMMAND... runs COMMAND until it succeeds, for at most
# SECONDS; it fails if the time runs out.
waitfor() {
	local end
	end=$(awk -v a="$(now)" -v s="$1" 'BEGIN {printf "%.3f", a + s}')
	shift
	until "$@"; do
		awk -v e="$end" -v n="$(now)" 'BEGIN {exit !(n > e)}' && return 1
		sleep 0.02
	done
}
https_ok() {
	[ "$(curl -ks --max-time 2 --resolve "$2:$1:127.0.0.1" -o /dev/null -w '%{http_code}' "https://$2:$1/.well-known/matrix/server")" = 200 ]
}
reloads() { grep -c 'msg=reloaded' "$1" || true; }
more_reloads() { [ "$(reloads "$1")" -gt "$2" ]; }
# queries N writes dnsperf input for N zones: the kinds of question a
# federating server asks, spread over every zone, shuffled.
queries() {
	local i o
	for ((i = 0; i < $1; i++)); do
		o=$(origin "$i")
		printf '%s A\n_matrix-fed._tcp.%s SRV\n%s AAAA\nnope.%s A\n' "hs.$o" "$o" "$o" "$o"
	done | shuf --random-source=<(yes)
}
# perf PORT FILE [ARGS...] prints "qps lost" of one dnsperf run.
perf() {
	local port=$1 file=$2
	shift 2
	dnsperf -s 127.0.0.1 -p "$port" -d "$file" -l "$secs" "$@" 2>&1 |
		awk '/Queries lost:/ {l = $3} /Queries per second:/ {q = $4} END {printf "%.0f %d\n", q, l}'
}

secret=$(grep -o 'secret = "[^"]*"' <("$tmp/manyzones" -n 0 -secondary 127.0.0.1) | cut -d'"' -f2)
# config N DIR [EXTRA...] writes DIR/signpost.toml for N names on this
# run's ports.
config() {
	local n=$1 dir=$2
	shift 2
	"$tmp/manyzones" -n "$n" -dns "127.0.0.1:${port[dns]}" -https "127.0.0.1:${port[https]}" -plain "127.0.0.1:${port[plain]}" \
		-storage "$dir/state" -catalog catalog.signpost.invalid -secondary 127.0.0.1 -no-rrl "$@" >"$dir/signpost.toml"
}
declare -A port
start() {
	"$tmp/signpost" serve -config "$1/signpost.toml" 2>>"$1/signpost.log" &
	spid=$!
	pids+=("$spid")
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# startknot N DIR starts knotd on the zones of DIR/signpost.toml, as
# signpost writes them, on port kport; its pid is kpid.
startknot() {
	local n=$1 dir=$2 i
	mkdir -p "$dir/knot"
	"$tmp/signpost" zone -config "$dir/signpost.toml" |
		awk -v dir="$dir/knot" '/^; zone / {f = dir "/" $3 "zone"} f {print > f}'
	kport=$(freeport)
	{
		printf 'server:\n  listen: 127.0.0.1@%s\n  rundir: "%s/knot"\n' "$kport" "$dir"
		printf '  udp-workers: %s\n  tcp-workers: %s\n' "$(nproc)" "$(nproc)"
		printf 'control:\n  listen: "%s/knot/knot.sock"\n' "$dir"
		printf 'database:\n  storage: "%s/knot"\n' "$dir"
		printf 'log:\n  - target: stderr\n    any: warning\n'
		printf 'template:\n  - id: default\n    storage: "%s/knot"\n    zonefile-sync: -1\n    journal-content: none\n' "$dir"
		printf 'zone:\n'
		for ((i = 0; i < n; i++)); do printf '  - domain: "%s."\n' "$(origin "$i")"; done
	} >"$dir/knot.conf"
	knotd -c "$dir/knot.conf" 2>"$dir/knot.log" &
	kpid=$!
	pids+=("$kpid")
}

# The yardstick: the same kinds of questions against a single zone, served
# all along; its rounds and each N's take turns, since other work on the
# machine moves the figures more than the number of zones does.
base=$tmp/n1
mkdir -p "$base"
port[dns]=$(freeport) port[https]=$(freeport) port[plain]=$(freeport)
bport=${port[dns]}
config 1 "$base"
queries 1 >"$base/queries.txt"
start "$base"
waitfor 30 answers "$bport" "$(origin 0)" SOA
startknot 1 "$base"
kbport=$kport
waitfor 30 answers "$kbport" "$(origin 0)" SOA

echo "signpost $("$tmp/signpost" version), $(knotd --version); $(nproc) cores; dnsperf -T 2 -c 4 -q 100 -l $secs, $rounds rounds against N = 1 in turn"
printf '%-6s %-11s %-5s %-5s %-6s %-4s %-9s %-13s %-6s %-5s %-11s | %-12s %-6s %-13s\n' \
	N validate dns https reload lost rss/MiB qps hs/s axfr term knot/s knot/MiB knot-qps
failed=0
for n in $ns; do
	dir=$tmp/n$n
	mkdir -p "$dir"
	port[dns]=$(freeport) port[https]=$(freeport) port[plain]=$(freeport)
	config "$n" "$dir"
	queries "$n" >"$dir/queries.txt"
	last=$(origin $((n - 1)))
	changed=$((n / 2))

	v=""
	for _ in 1 2 3; do
		t0=$(now)
		"$tmp/signpost" validate -config "$dir/signpost.toml" >/dev/null
		v+="$(since "$t0") "
	done

	t0=$(now)
	start "$dir"
	waitfor 120 answers "${port[dns]}" "$last" SOA || { echo "run.sh: N=$n: no DNS answer" >&2; tail -5 "$dir/signpost.log" >&2; exit 1; }
	tdns=$(since "$t0")
	waitfor 120 https_ok "${port[https]}" "$last" || { echo "run.sh: N=$n: no HTTPS answer" >&2; tail -5 "$dir/signpost.log" >&2; exit 1; }
	thttps=$(since "$t0")
	sleep 2
	idle=$(rss "$spid")

	qn="" q1=""
	for ((r = 0; r < rounds; r++)); do
		read -r q _ <<<"$(perf "$bport" "$base/queries.txt" -T 2 -c 4 -q 100)"
		q1+="$q "
		read -r q _ <<<"$(perf "${port[dns]}" "$dir/queries.txt" -T 2 -c 4 -q 100)"
		qn+="$q "
	done
	qps=$(median "$qn")

	# Reload a one-line change under a steady load.
	dnsperf -s 127.0.0.1 -p "${port[dns]}" -d "$dir/queries.txt" -l 6 -Q 20000 -c 4 -t 2 >"$dir/reload.perf" 2>&1 &
	perfpid=$!
	sleep 2
	config "$n" "$dir" -extra "probe 300 IN A 192.0.2.1" -changed "$changed"
	before=$(reloads "$dir/signpost.log")
	t0=$(now)
	kill -HUP "$spid"
	waitfor 120 more_reloads "$dir/signpost.log" "$before"
	treload=$(since "$t0")
	wait "$perfpid" || true
	lost=$(awk '/Queries lost:/ {print $3}' "$dir/reload.perf")
	answers "${port[dns]}" "probe.$(origin "$changed")" A 192.0.2.1 || { echo "run.sh: N=$n: the reload's record is not served" >&2; failed=1; }
	[ "$lost" = 0 ] || failed=1

	for ((i = 0; i < n; i++)); do origin "$i"; echo; done >"$dir/names.txt"
	# Self-signed certificates are made at a name's first handshake (as
	# ACME ones are obtained ahead): make them first, then measure.
	"$tmp/hsload" -addr "127.0.0.1:${port[https]}" -names "$dir/names.txt" -c 8 -d "$((n / 500 + 1))s" >/dev/null
	hs=$("$tmp/hsload" -addr "127.0.0.1:${port[https]}" -names "$dir/names.txt" -c 8 -d "${secs}s" | awk '/handshakes\/s:/ {print $2}')
	after=$(rss "$spid")

	t0=$(now)
	records=$(kdig @127.0.0.1 -p "${port[dns]}" -y "hmac-sha256:xfr.provider.example:$secret" AXFR catalog.signpost.invalid +noall +answer 2>/dev/null | grep -c . || true)
	taxfr=$(since "$t0")
	[ "$records" -ge $((n + 4)) ] || { echo "run.sh: N=$n: catalog AXFR gave $records records" >&2; failed=1; }

	# SIGTERM in the middle of a reload, then of a start-up.
	kill -HUP "$spid"
	sleep 0.1
	t0=$(now)
	kill -TERM "$spid"
	wait "$spid" 2>/dev/null || true
	tterm=$(since "$t0")
	start "$dir"
	sleep 0.3
	t0=$(now)
	kill -TERM "$spid"
	wait "$spid" 2>/dev/null || true
	tterm2=$(since "$t0")

	# Knot on the same zones, as signpost writes them.
	config "$n" "$dir"
	t0=$(now)
	startknot "$n" "$dir"
	waitfor 300 answers "$kport" "$last" SOA
	kload=$(since "$t0")
	kn="" k1=""
	for ((r = 0; r < rounds; r++)); do
		read -r q _ <<<"$(perf "$kbport" "$base/queries.txt" -T 2 -c 4 -q 100)"
		k1+="$q "
		read -r q _ <<<"$(perf "$kport" "$dir/queries.txt" -T 2 -c 4 -q 100)"
		kn+="$q "
	done
	kqps=$(median "$kn")
	# The same one-line change: the changed zone's file as signpost writes
	# it after the change (its serial is higher), then knotc reload.
	config "$n" "$dir" -extra "probe 300 IN A 192.0.2.1" -changed "$changed"
	"$tmp/signpost" zone -config "$dir/signpost.toml" |
		awk -v want="$(origin "$changed")." '/^; zone / {f = ($3 == want)} f' >"$dir/knot/$(origin "$changed").zone.new"
	mv "$dir/knot/$(origin "$changed").zone.new" "$dir/knot/$(origin "$changed").zone"
	t0=$(now)
	knotc -s "$dir/knot/knot.sock" -t 120 reload >/dev/null
	waitfor 120 answers "$kport" "probe.$(origin "$changed")" A 192.0.2.1
	kreload=$(since "$t0")
	krss=$(rss "$kpid")
	stop "$kpid"

	ratio() { awk -v a="$1" -v b="$(median "$2")" 'BEGIN {printf "%.2f", a / b}'; }
	printf '%-6s %-11s %-5s %-5s %-6s %-4s %-9s %-13s %-6s %-5s %-11s | %-12s %-6s %-13s\n' "$n" "$(range "$v")" "$tdns" "$thttps" "$treload" "$lost" \
		"$idle/$after" "$qps $(ratio "$qps" "$q1")" "$hs" "$taxfr" "$tterm/$tterm2" "$kload/$kreload" "$krss" "$kqps $(ratio "$kqps" "$k1")"
done
echo
echo "qps, knot-qps: median of $rounds rounds, and its ratio to the median of the same server's N = 1 rounds taken in turn"
echo "knot/s: start to the last zone's SOA / knotc reload to the changed record; term: SIGTERM during reload / start-up"
exit "$failed"
