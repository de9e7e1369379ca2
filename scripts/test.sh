#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, unit tests and end-to-end tests
# that drive the real `svcnet` binary with real kubectl. Installs what it needs from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the suite uses. kubectl itself is on PATH on every machine we run on.
need=()
command -v curl >/dev/null || need+=(curl)
command -v ip >/dev/null || need+=(iproute2)          # network namespaces (netns pod network tests)
command -v python3 >/dev/null || need+=(python3)      # the pods in the end-to-end tests run small servers
command -v nft >/dev/null || need+=(nftables)         # svcnet-nft's namespace tests program real rules
command -v conntrack >/dev/null || need+=(conntrack)  # ... and clean up UDP conntrack entries
command -v dig >/dev/null || need+=(bind9-dnsutils)    # queries in the cluster DNS end-to-end tests
command -v etcd >/dev/null || need+=(etcd-server)     # the etcd store's and HA control plane's tests
command -v etcdctl >/dev/null || need+=(etcd-client)  # ... which read etcd back with etcdctl
command -v protoc >/dev/null || need+=(protobuf-compiler)  # etcd-client's build compiles etcd's .proto files
if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing packages (install them or run as root): ${need[*]}" >&2
    exit 1
  fi
fi
command -v kubectl >/dev/null || { echo "kubectl must be on PATH" >&2; exit 1; }
# The official Python client is one of the clients the end-to-end tests drive (tests/python_client.rs).
if ! python3 -c 'import kubernetes' 2>/dev/null; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    else
      echo "the Python client tests need pip (install python3-pip or run as root)" >&2
      exit 1
    fi
  fi
  # Debian's python3 is "externally managed" (PEP 668); CI is a throwaway root machine.
  python3 -m pip install -q kubernetes 2>/dev/null || python3 -m pip install -q --break-system-packages kubernetes
fi

# A test run from a clean checkout gains nothing from incremental state, which would otherwise be the
# largest thing on disk after the test binaries themselves.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Said up front: a build that runs out of disk fails far from the cause (about 2.5 GB is needed).
echo "== disk"
df -h . | tail -n 1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
