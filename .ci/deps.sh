#!/usr/bin/env bash
# Installs what the tests and the benchmarks need, when missing; with the
# argument "demo", only what `make demo` uses. Safe to rerun; does nothing
# when everything is there. --list prints the group's packages instead.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
group=all list=
for arg in "$@"; do
  case $arg in
    demo) group=demo ;;
    --list) list=1 ;;
    *) echo "deps: unknown argument $arg; use: deps.sh [demo] [--list]" >&2; exit 2 ;;
  esac
done

# command -> Debian package: what deploy/demo.sh runs.
declare -A need=(
  [curl]=curl
  [python3]=python3
  [sha256sum]=coreutils
  [cmp]=diffutils
)
# The rest: the real programs the integration tests and benchmarks drive.
[ "$group" = demo ] || need+=(
  [squid]=squid-openssl
  [mitmdump]=mitmproxy
  [openssl]=openssl
  [nginx]=nginx
  [haproxy]=haproxy
  [ip]=iproute2
  [tc]=iproute2
  [nft]=nftables
  [sshd]=openssh-server
  [ssh]=openssh-client
  [ssh-keygen]=openssh-client
  [iperf3]=iperf3
  [rsync]=rsync
  [systemd-analyze]=systemd
)

if [ -n "$list" ]; then
  printf '%s\n' "${need[@]}" | sort -u
  exit 0
fi

missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# Debian's plain squid is built with GnuTLS and cannot bump TLS (the
# inspecting-proxy tests need ssl-bump): squid-openssl replaces it.
if [ "$group" != demo ] && command -v squid >/dev/null 2>&1 && ! squid -v 2>/dev/null | grep -q -- --with-openssl; then
  missing+=(squid-openssl)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  echo "deps: tests that need them will be skipped" >&2
  exit 0
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# The tests start their own nginx, squid, haproxy and sshd on loopback:
# keep the packages' maintainer scripts from starting system-wide ones.
policy=/usr/sbin/policy-rc.d
own_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  own_policy=1
fi
trap '[ -n "$own_policy" ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
