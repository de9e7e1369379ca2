#!/usr/bin/env bash
# Cluster DNS benchmark: svcnet's DNS server against unbound serving the same A records from
# local-data, each pinned to CPU 0 (unbound with one thread; svcnet is the whole `svcnet up` process),
# dnsperf pinned to CPU 1. `svcnet dns` (CoreDNS's drop-in, its own process with a Corefile) is measured
# the same way beside them, with its memory next to CoreDNS's published formula. Measures, never asserts. Everything listens on 127.0.0.1; every process
# started here is stopped by PID on exit.
#
#   crates/svcnet-dns/bench/run.sh            # N=1000 services, 10 s per server
#   N=5000 SECS=20 crates/svcnet-dns/bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
N=${N:-1000}
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-4}

need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v unbound >/dev/null || need+=(unbound)
command -v dig >/dev/null || need+=(bind9-dnsutils)
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[[ ${SKIP_BUILD:-} ]] || CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} cargo build --release -q -p svcnet
SVCNET=$PWD/target/release/svcnet

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

sport=$(free_port)
taskset -c 0 "$SVCNET" up --data-dir "$tmp/svcnet" --api-listen 127.0.0.1:0 \
  --dns-listen "127.0.0.1:$sport" --dns-upstream 127.0.0.1:9 >"$tmp/up.out" 2>"$tmp/up.log" &
pids+=($!)
for _ in $(seq 1 100); do [[ -s $tmp/svcnet/dns-address ]] && break; sleep 0.2; done
export KUBECONFIG=$tmp/svcnet/kubeconfig

# N Services in one request-stream: a generated List through one `kubectl create`.
python3 - "$N" >"$tmp/svcs.yaml" <<'PY'
import sys
n = int(sys.argv[1])
print("apiVersion: v1\nkind: List\nitems:")
for i in range(n):
    print(f"- apiVersion: v1\n  kind: Service\n  metadata: {{name: bench-{i}, namespace: default}}\n  spec:\n    ports: [{{name: http, port: 80}}]")
PY
t0=$(date +%s.%N)
kubectl create -f "$tmp/svcs.yaml" >/dev/null
t1=$(date +%s.%N)
last=bench-$((N - 1)).default.svc.cluster.local
for _ in $(seq 1 200); do [[ -n $(dig +short @127.0.0.1 -p "$sport" "$last") ]] && break; sleep 0.1; done
echo "created $N services in $(python3 -c "print(round($t1-$t0,1))") s"

kubectl get svc -n default -o jsonpath='{range .items[*]}{.metadata.name} {.spec.clusterIP}{"\n"}{end}' \
  | grep '^bench-' >"$tmp/ips.txt"
awk '{print $1".default.svc.cluster.local A"}' "$tmp/ips.txt" >"$tmp/queries.txt"

uport=$(free_port)
{
  cat <<CONF
server:
  interface: 127.0.0.1
  port: $uport
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$tmp"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  num-threads: 1
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  do-not-query-localhost: yes
  local-zone: "cluster.local." static
CONF
  awk '{print "  local-data: \""$1".default.svc.cluster.local. 5 IN A "$2"\""}' "$tmp/ips.txt"
} >"$tmp/unbound.conf"
taskset -c 0 unbound -d -c "$tmp/unbound.conf" >"$tmp/unbound.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do [[ -n $(dig +short +time=1 +tries=1 @127.0.0.1 -p "$uport" "$last") ]] && break; sleep 0.1; done

# `svcnet dns` as its own process against the same API server, configured by a Corefile.
dport=$(free_port)
cat >"$tmp/Corefile" <<CONF
.:$dport {
    bind 127.0.0.1
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    forward . 127.0.0.1:9
    cache 30
    loadbalance
}
CONF
taskset -c 0 "$SVCNET" dns --kubeconfig "$KUBECONFIG" --conf "$tmp/Corefile" >"$tmp/dns.out" 2>"$tmp/dns.log" &
pids+=($!)
dns_pid=$!
for _ in $(seq 1 300); do [[ -n $(dig +short +time=1 +tries=1 @127.0.0.1 -p "$dport" "$last") ]] && break; sleep 0.1; done

run() { # name port
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$2" -d "$tmp/queries.txt" -l "$SECS" -c "$CLIENTS" -q 200 >"$tmp/$1.perf" 2>&1 || true
  qps=$(awk '/Queries per second:/ {print $4}' "$tmp/$1.perf")
  lat=$(awk '/Average Latency \(s\):/ {print $4}' "$tmp/$1.perf")
  lost=$(awk '/Queries lost:/ {print $3}' "$tmp/$1.perf")
  printf '%-8s qps=%s avg_latency_ms=%s lost=%s\n' "$1" "$qps" "$(python3 -c "print(round(${lat:-0}*1000,3))")" "$lost"
  eval "${1}_qps=$qps"
}
run svcnet "$sport"
run dns "$dport"
run unbound "$uport"
[[ ${unbound_qps%.*} -gt 0 ]] || { echo "unbound log:"; tail -5 "$tmp/unbound.log"; }
python3 -c "print('ratio svcnet/unbound = %.2f' % ($svcnet_qps / $unbound_qps))"
python3 -c "print('ratio svcnet-dns/unbound = %.2f' % ($dns_qps / $unbound_qps))"
python3 -c "print('ratio svcnet-dns/CoreDNS published (33.7k qps on 2 vCPUs) = %.2f' % ($dns_qps / 33700))"
drss=$(awk '/VmRSS/ {print $2}' "/proc/$dns_pid/status")
echo "svcnet dns RSS after the run: $((drss / 1024)) MB; CoreDNS's formula for $N services: $(python3 -c "print(round($N/1000 + 54, 1))") MB"
rss=$(awk '/VmRSS/ {print $2}' "/proc/${pids[0]}/status")
echo "svcnet up RSS after the run: $((rss / 1024)) MB (whole process: API server, store, controllers, agent, DNS)"
