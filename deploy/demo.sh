#!/usr/bin/env bash
# The quick-start demo: everything on loopback, cleaned up on exit.
#   1. a self-signed certificate and a user in a temporary directory
#   2. a burrow server
#   3. a burrow client forwarding a local port, through the server, to a
#      small HTTP server holding a random 8 MiB file
#   4. the file fetched through the tunnel and its SHA-256 compared
#   5. a file and a folder sent with 'burrow send' over the same session
#      (the client's control socket), listed, fetched back and compared
set -euo pipefail
BURROW=$(realpath "${1:-bin/burrow}")
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# wait_log FILE REGEX: wait until a line of FILE matches, print the match.
wait_log() {
  for _ in $(seq 100); do
    if line=$(grep -m1 -E "$2" "$1"); then echo "$line"; return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for /$2/ in $1:" >&2; cat "$1" >&2; return 1
}

step "certificate and user"
"$BURROW" cert self-signed --host localhost --host 127.0.0.1 --out "$dir" | tee "$dir/cert.txt"
fingerprint=$(sed -n 's/^fingerprint: //p' "$dir/cert.txt")
echo 'demo-password' | "$BURROW" user add --authfile "$dir/users.json" --password-stdin demo

step "a target: an HTTP server on loopback with a random 8 MiB file"
mkdir "$dir/www"
head -c 8M /dev/urandom > "$dir/www/blob.bin"
python3 -m http.server --bind 127.0.0.1 0 --directory "$dir/www" >"$dir/http.log" 2>&1 &
pids+=($!)
http_port=$(wait_log "$dir/http.log" 'port [0-9]+' | sed -E 's/.*port ([0-9]+).*/\1/')
echo "http server on 127.0.0.1:$http_port"

step "burrow server"
mkdir "$dir/files"
"$BURROW" server --listen 127.0.0.1:0 --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem" \
  --authfile "$dir/users.json" --files-root "$dir/files" 2>"$dir/server.log" &
pids+=($!)
server_addr=$(wait_log "$dir/server.log" 'msg=listening' | sed -E 's/.*addr=([^ ]+).*/\1/')
echo "server on $server_addr"

step "burrow client: local port => 127.0.0.1:$http_port through the tunnel"
BURROW_AUTH=demo:demo-password "$BURROW" client --fingerprint "$fingerprint" --control "$dir/control.sock" "wss://$server_addr" \
  "127.0.0.1:0:127.0.0.1:$http_port" 2>"$dir/client.log" &
pids+=($!)
local_addr=$(wait_log "$dir/client.log" 'msg="forward listening"' | sed -E 's/.*local=([^ ]+).*/\1/')
wait_log "$dir/client.log" 'msg=connected' >/dev/null
echo "client forwarding $local_addr"

step "fetch the file through the tunnel"
curl -sS -o "$dir/fetched.bin" "http://$local_addr/blob.bin"
want=$(sha256sum <"$dir/www/blob.bin" | cut -d' ' -f1)
got=$(sha256sum <"$dir/fetched.bin" | cut -d' ' -f1)
echo "sent     $want"
echo "received $got"
if [ "$want" != "$got" ]; then
  echo "demo FAILED: the file changed on the way" >&2
  exit 1
fi

step "burrow send a file and a folder over the same session, then fetch them back"
mkdir -p "$dir/outbox/photos"
for i in 1 2 3; do head -c 300K /dev/urandom > "$dir/outbox/photos/img$i.jpg"; done
"$BURROW" send --control "$dir/control.sock" --to inbox/ "$dir/www/blob.bin" "$dir/outbox/photos"
"$BURROW" ls --control "$dir/control.sock" inbox/
"$BURROW" fetch --control "$dir/control.sock" --to "$dir/back" inbox/blob.bin inbox/photos
diff -r "$dir/outbox/photos" "$dir/back/photos"
cmp "$dir/www/blob.bin" "$dir/back/blob.bin"
echo "sent, listed and fetched back intact"

echo
echo "server log:"; sed 's/^/  /' "$dir/server.log"
echo "client log:"; sed 's/^/  /' "$dir/client.log"
printf '\n\033[1mdemo OK: 8 MiB crossed the tunnel intact, and files went both ways over the same session\033[0m\n'
