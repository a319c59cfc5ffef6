#!/usr/bin/env bash
# Installs Burrow as systemd services: the binary, the units, sample
# configs (never overwriting an existing one) and the 'burrow' system
# user. Safe to run again, to upgrade: the binary and the units are
# replaced, configs are kept. It starts nothing.
#
#   make build && sudo deploy/install.sh
#
# Environment:
#   DESTDIR     install under this root instead of / (packaging, tests);
#               skips the user, file ownership and systemctl
#   PREFIX      where the binary goes, PREFIX/bin/burrow (default /usr/local);
#               the units' ExecStart= is rewritten to match
#   BURROW_BIN  the binary to install (default: bin/burrow of this checkout)
#   UNITDIR     where the units go (default /etc/systemd/system)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
destdir=${DESTDIR:-}
destdir=${destdir%/}
prefix=${PREFIX:-/usr/local}
bin_src=${BURROW_BIN:-$repo/bin/burrow}
unitdir=${UNITDIR:-/etc/systemd/system}
bindir=$prefix/bin
confdir=/etc/burrow
statedir=/var/lib/burrow
user=burrow

say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

[ -x "$bin_src" ] || die "no burrow binary at $bin_src; build it first with 'make build' (or set BURROW_BIN)"
if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
  die "installing into / needs root: sudo $0 (or set DESTDIR=DIR to install under DIR)"
fi
case $prefix in /*) ;; *) die "PREFIX must be an absolute path, not $prefix" ;; esac

# install_config SRC DST: DST unless it exists. An existing DST that
# differs from the shipped sample is left alone and the sample is put
# beside it as DST.new, to compare.
install_config() {
  local src=$1 dst=$destdir$2
  if [ ! -e "$dst" ]; then
    install -m 0640 "$src" "$dst"
    say "  $2 (new)"
  elif cmp -s "$src" "$dst"; then
    say "  $2 (unchanged)"
  else
    install -m 0640 "$src" "$dst.new"
    say "  $2 kept; the shipped sample is in $2.new"
  fi
}

say "binary:"
install -d -m 0755 "$destdir$bindir"
# install(1) replaces the file rather than writing into it, so a running
# server keeps its old binary until it is restarted.
install -m 0755 "$bin_src" "$destdir$bindir/burrow"
say "  $bindir/burrow ($("$destdir$bindir/burrow" --version 2>/dev/null || echo 'version unknown'))"

say "systemd units:"
install -d -m 0755 "$destdir$unitdir"
for unit in burrow-server.service burrow-client@.service; do
  tmp=$(mktemp)
  sed "s#/usr/local/bin/burrow#$bindir/burrow#g" "$here/systemd/$unit" >"$tmp"
  install -m 0644 "$tmp" "$destdir$unitdir/$unit"
  rm -f "$tmp"
  say "  $unitdir/$unit"
done

say "configuration:"
install -d -m 0750 "$destdir$confdir"
install_config "$here/server.toml" "$confdir/server.toml"
install_config "$here/client.toml" "$confdir/client.toml.sample"
install -d -m 0700 "$destdir$statedir"

if [ -n "$destdir" ]; then
  say "DESTDIR set: not creating the '$user' user, not changing owners, not running systemctl."
else
  if ! getent passwd "$user" >/dev/null; then
    group_opt=(--user-group)
    getent group "$user" >/dev/null && group_opt=(--gid "$user")
    useradd --system "${group_opt[@]}" --home-dir "$statedir" --no-create-home \
      --shell /usr/sbin/nologin --comment "Burrow tunnel" "$user"
    say "user: created system user '$user'"
  else
    say "user: '$user' exists"
  fi
  # The services read /etc/burrow (group burrow) and own /var/lib/burrow.
  chown root:"$user" "$confdir"
  find "$confdir" -maxdepth 1 -type f -name '*.toml*' -exec chown root:"$user" {} +
  chown "$user:$user" "$statedir"
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "systemd: daemon-reload done"
    if systemctl is-active --quiet burrow-server.service; then
      say "systemd: burrow-server is running the previous binary; 'systemctl restart burrow-server' to switch"
    fi
  fi
fi

cat <<EOF

Next steps (docs/operations.md has the details):

 Server
  1. A certificate (or set tls-self-signed / tls-domain in server.toml):
       burrow cert self-signed --host tunnel.example.com --out $confdir
       chgrp $user $confdir/key.pem && chmod 0640 $confdir/key.pem
  2. Users, written as the service's user so that it can read them:
       runuser -u $user -- burrow user add --authfile $statedir/users.json alice
  3. Review $confdir/server.toml, then:
       burrow config check $confdir/server.toml
       systemctl enable --now burrow-server
       systemctl status burrow-server; burrow status --admin 127.0.0.1:9090

 Client (one unit per tunnel, NAME is yours)
  1. cp $confdir/client.toml.sample $confdir/client-NAME.toml, edit it,
     and put USER:PASSWORD in the auth-file it names (chgrp $user, mode 0640).
  2. burrow config check $confdir/client-NAME.toml
     systemctl enable --now burrow-client@NAME
EOF
