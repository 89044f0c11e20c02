#!/usr/bin/env bash
# Serve the same three /.well-known/matrix/ documents from `signpost serve`
# (self-signed mode: its own ECDSA P-256 certificate), nginx and Caddy (one
# ECDSA P-256 certificate from openssl), on loopback, and print medians and
# ratios of:
#   keep-alive requests/s   wrk, HTTP/1.1 over TLS, 2 threads, 64 connections
#   HTTP/2 requests/s       h2load, 2 threads, 64 connections, 10 streams each
#   full handshakes/s       bench/hsload: a new connection each time, TLS 1.3,
#                           X25519, tickets issued but never used (a fresh peer);
#                           its lean client checks nothing, so that on a 2-core
#                           machine the servers, not the client, get the CPU
#   (optional) hsgo         the same with a crypto/tls client, which checks the
#                           signature and costs more CPU than the server it loads
# Each figure also comes as server CPU time per request or handshake (user +
# system, from /proc), which a busy machine disturbs less than rates.
#
# Usage: httpserver/bench/run.sh            (from anywhere in the repository)
# Environment:
#   BENCH_SECONDS=10   length of each measurement
#   BENCH_ROUNDS=3     rounds; servers take turns within a round
#   BENCH_ONLY="wrk h2load hs"   which measurements to run (also: hsgo)
#   SIGNPOST_ENV="GOGC=200 GOMAXPROCS=2"  environment for signpost only
#   HSLOAD_ARGS="-c 8"                    extra hsload flags (e.g. -get /.well-known/matrix/server)
# Needs (Debian): nginx caddy wrk nghttp2-client openssl curl python3, and go.
set -euo pipefail

D=${BENCH_SECONDS:-10}
R=${BENCH_ROUNDS:-3}
ONLY=${BENCH_ONLY:-"wrk h2load hs"}
NAME=chat.example.com
SERVERS="signpost nginx caddy"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

for p in wrk h2load nginx caddy openssl curl python3 go; do
	command -v "$p" >/dev/null || { echo "run.sh: $p not found (apt-get install nginx caddy wrk nghttp2-client openssl curl python3)" >&2; exit 1; }
done

W=$(mktemp -d /tmp/wkbench.XXXXXX)
chmod 755 "$W" # nginx workers run as nobody
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

read -r P_SIGNPOST P_NGINX P_CADDY P_DNS P_PLAIN < <(python3 -c '
import socket
ss=[socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1",0))
print(*[s.getsockname()[1] for s in ss])')
port() { case $1 in signpost) echo "$P_SIGNPOST";; nginx) echo "$P_NGINX";; caddy) echo "$P_CADDY";; esac; }
declare -A PID
# cputicks PID: CPU time (user+system, clock ticks) of PID and its children
# (nginx's workers), so that each figure can be given per request as well:
# that survives a busy machine better than requests per second.
cputicks() {
	local t=0 q
	for q in $1 $(pgrep -P "$1"); do
		t=$((t + $(awk '{print $14+$15}' "/proc/$q/stat" 2>/dev/null || echo 0)))
	done
	echo $t
}

echo "building..." >&2
(cd "$ROOT" && go build -o "$W/signpost" ./cmd/signpost && go build -o "$W/hsload" ./httpserver/bench/hsload)

# The IP address is for Caddy: wrk sends the URL's host, 127.0.0.1, as SNI,
# and Caddy picks certificates by SNI.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-keyout "$W/key.pem" -out "$W/cert.pem" -subj "/CN=$NAME" -addext "subjectAltName=DNS:$NAME,IP:127.0.0.1" 2>/dev/null
chmod 644 "$W/key.pem"

# The name is outside every zone, so acme.names asks for its certificate.
cat >"$W/signpost.toml" <<EOF
[dns]
listen = ["127.0.0.1:$P_DNS"]

[http]
listen = "127.0.0.1:$P_SIGNPOST"
plain_listen = "127.0.0.1:$P_PLAIN"

[acme]
mode = "self-signed"
names = ["$NAME"]
storage = "$W/state"

[[delegation]]
server_name = "$NAME"
server      = "hs.$NAME:443"
client      = "https://hs.$NAME"

[delegation.support]
page     = "https://example.com/help"
contacts = [{ matrix_id = "@admin:$NAME", email = "admin@example.com", role = "m.role.admin" }]
EOF

waitup() { # server port
	for _ in $(seq 100); do
		curl -fsk --resolve "$NAME:$2:127.0.0.1" "https://$NAME:$2/.well-known/matrix/server" -o /dev/null 2>/dev/null && return 0
		sleep 0.1
	done
	echo "run.sh: $1 did not come up; its log:" >&2
	cat "$W/$1.log" >&2
	exit 1
}

env ${SIGNPOST_ENV:-} "$W/signpost" serve -config "$W/signpost.toml" >"$W/signpost.log" 2>&1 &
PIDS+=($!)
PID[signpost]=$!
waitup signpost "$P_SIGNPOST"

# nginx and Caddy serve the bytes signpost serves, from files.
mkdir -p "$W/www/.well-known/matrix"
for d in server client support; do
	curl -fsk --resolve "$NAME:$P_SIGNPOST:127.0.0.1" "https://$NAME:$P_SIGNPOST/.well-known/matrix/$d" -o "$W/www/.well-known/matrix/$d"
done
chmod -R a+rX "$W/www"

CORS='add_header Access-Control-Allow-Origin "*" always;
        add_header Access-Control-Allow-Methods "GET, HEAD, POST, PUT, DELETE, OPTIONS" always;
        add_header Access-Control-Allow-Headers "X-Requested-With, Content-Type, Authorization" always;'
mkdir -p "$W/nginx/logs"
cat >"$W/nginx/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $W/nginx/nginx.pid;
error_log $W/nginx.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    types { }
    default_type application/json;
    open_file_cache max=64 inactive=60s;
    open_file_cache_valid 60s;
    keepalive_requests 1000000;
    keepalive_timeout 90s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    ssl_session_cache shared:SSL:10m;
    server {
        listen 127.0.0.1:$P_NGINX ssl http2;
        server_name $NAME;
        ssl_certificate $W/cert.pem;
        ssl_certificate_key $W/key.pem;
        root $W/www;
        location = /.well-known/matrix/server {
            $CORS
            add_header Cache-Control "max-age=86400" always;
        }
        location /.well-known/matrix/ {
            $CORS
            add_header Cache-Control "max-age=3600" always;
        }
    }
}
EOF
nginx -p "$W/nginx" -c "$W/nginx/nginx.conf" >>"$W/nginx.log" 2>&1 &
PIDS+=($!)
PID[nginx]=$!
waitup nginx "$P_NGINX"

mkdir -p "$W/caddy-home"
cat >"$W/Caddyfile" <<EOF
{
	admin off
	auto_https off
	default_sni $NAME
	storage file_system $W/caddy-home/data
	servers {
		protocols h1 h2
	}
}
https://$NAME:$P_CADDY {
	bind 127.0.0.1
	tls $W/cert.pem $W/key.pem
	root * $W/www
	header /.well-known/matrix/* {
		Access-Control-Allow-Origin *
		Access-Control-Allow-Methods "GET, HEAD, POST, PUT, DELETE, OPTIONS"
		Access-Control-Allow-Headers "X-Requested-With, Content-Type, Authorization"
		Content-Type application/json
		Cache-Control "max-age=3600"
	}
	header /.well-known/matrix/server Cache-Control "max-age=86400"
	file_server
}
EOF
HOME="$W/caddy-home" XDG_DATA_HOME="$W/caddy-home" XDG_CONFIG_HOME="$W/caddy-home" \
	caddy run --config "$W/Caddyfile" --adapter caddyfile >"$W/caddy.log" 2>&1 &
PIDS+=($!)
PID[caddy]=$!
waitup caddy "$P_CADDY"

# Same bytes everywhere, or the comparison means nothing.
for s in $SERVERS; do
	for d in server client support; do
		curl -fsk --resolve "$NAME:$(port "$s"):127.0.0.1" "https://$NAME:$(port "$s")/.well-known/matrix/$d" -o "$W/got" ||
			{ echo "run.sh: $s: GET $d failed" >&2; exit 1; }
		cmp -s "$W/got" "$W/www/.well-known/matrix/$d" || { echo "run.sh: $s serves other bytes for $d" >&2; exit 1; }
	done
	echo "== $s: GET /.well-known/matrix/client" >&2
	curl -sk --http1.1 -D - -o /dev/null --resolve "$NAME:$(port "$s"):127.0.0.1" "https://$NAME:$(port "$s")/.well-known/matrix/client" | tr -d '\r' | grep -v '^$' >&2
done

cat >"$W/wk.lua" <<EOF
local paths = {"/.well-known/matrix/server", "/.well-known/matrix/client", "/.well-known/matrix/support"}
local reqs = {}
local i = 0
init = function(args)
	for k, p in ipairs(paths) do reqs[k] = wrk.format("GET", p, {Host = "$NAME"}) end
end
request = function()
	i = i % 3 + 1
	return reqs[i]
end
EOF

RES="$W/results"
: >"$RES"
measure() { # metric server
	local s=$2 p out v n t0 t1
	p=$(port "$s")
	t0=$(cputicks "${PID[$s]}")
	case $1 in
	wrk)
		out=$(wrk -t2 -c64 -d"${D}s" -s "$W/wk.lua" "https://127.0.0.1:$p/")
		if grep -q "Non-2xx" <<<"$out"; then echo "run.sh: $s: wrk saw errors:" >&2; echo "$out" >&2; exit 1; fi
		v=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
		n=$(awk '/requests in/ {print $1}' <<<"$out")
		;;
	h2load)
		out=$(h2load -c64 -m10 -t2 -D "$D" --warm-up-time=1 --connect-to="127.0.0.1:$p" \
			"https://$NAME:$p/.well-known/matrix/server" "https://$NAME:$p/.well-known/matrix/client" "https://$NAME:$p/.well-known/matrix/support")
		if ! grep -Eq "status codes: [0-9]+ 2xx, 0 3xx, 0 4xx, 0 5xx" <<<"$out" || ! grep -q "Application protocol: h2" <<<"$out"; then
			echo "run.sh: $s: h2load saw errors or no h2:" >&2; echo "$out" >&2; exit 1
		fi
		v=$(awk '/^finished in/ {print $4}' <<<"$out")
		n=$(awk '/^requests:/ {print $8}' <<<"$out")
		;;
	hs | hsgo)
		local client=lean
		[ "$1" = hsgo ] && client=go
		out=$("$W/hsload" -client $client -addr "127.0.0.1:$p" -sni "$NAME" -d "${D}s" ${HSLOAD_ARGS:-}) || { echo "$out" >&2; exit 1; }
		v=$(awk '/^handshakes\/s:/ {print $2}' <<<"$out")
		n=$(awk '/^handshakes:/ {print $2}' <<<"$out")
		;;
	esac
	t1=$(cputicks "${PID[$s]}")
	if [ -z "$v" ] || [ "${v%%.*}" = 0 ]; then echo "run.sh: $s: no figure from $1:" >&2; echo "$out" >&2; exit 1; fi
	# microseconds of server CPU per request or handshake
	c=$(awk -v t="$((t1 - t0))" -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
	echo "$1 $s $v $c" >>"$RES"
	printf '%-7s %-9s %10.0f/s %8s us CPU each\n' "$1" "$s" "$v" "$c" >&2
}

for r in $(seq "$R"); do
	echo "== round $r/$R (${D}s each)" >&2
	for m in $ONLY; do
		for s in $SERVERS; do
			measure "$m" "$s"
		done
	done
done

echo "signpost serve, $(go version | cut -d' ' -f3), environment: ${SIGNPOST_ENV:-(none)}; $(nginx -v 2>&1 | cut -d' ' -f3); caddy $(caddy version | cut -d' ' -f1); $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RES" "$R" "$D" <<'EOF'
import sys, statistics
res, cpu = {}, {}
for line in open(sys.argv[1]):
    m, s, v, c = line.split()
    res.setdefault(m, {}).setdefault(s, []).append(float(v))
    cpu.setdefault(m, {}).setdefault(s, []).append(float(c))
names = {"wrk": "keep-alive req/s (wrk, HTTP/1.1)", "h2load": "HTTP/2 req/s (h2load)",
         "hs": "full handshakes/s (hsload)", "hsgo": "full handshakes/s (hsload, Go client)"}
print(f"medians of {sys.argv[2]} runs of {sys.argv[3]}s; ratios > 1 favour signpost")
print(f"{'':34} {'signpost':>9} {'nginx':>9} {'caddy':>9} {'sp/nginx':>9} {'sp/caddy':>9}")
for m in ("wrk", "h2load", "hs", "hsgo"):
    if m not in res:
        continue
    med = {s: statistics.median(v) for s, v in res[m].items()}
    c = {s: statistics.median(v) for s, v in cpu[m].items()}
    print(f"{names[m]:34} {med['signpost']:9.0f} {med['nginx']:9.0f} {med['caddy']:9.0f} "
          f"{med['signpost']/med['nginx']:8.2f}x {med['signpost']/med['caddy']:8.2f}x")
    print(f"{'  server CPU us per op (lower wins)':34} {c['signpost']:9.1f} {c['nginx']:9.1f} {c['caddy']:9.1f} "
          f"{c['nginx']/c['signpost']:8.2f}x {c['caddy']/c['signpost']:8.2f}x")
EOF
