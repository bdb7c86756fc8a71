#!/usr/bin/env bash
# Two nodes on this machine (loopback only) that share a market space and sync a listing.
# Everything lives in a temporary directory that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
M=.venv/bin/mycelium
DEMO=$(mktemp -d)
export MYCELIUM_PASSPHRASE=demo MYCELIUM_INSECURE_FAST_KDF=1
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait || true; rm -rf "$DEMO"; }
trap cleanup EXIT

$M init --home "$DEMO/ana" --name Ana >/dev/null
$M init --home "$DEMO/ben" --name Ben >/dev/null
BEN=$($M id --home "$DEMO/ben" --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["did"])')
ANA_PEER=$($M id --home "$DEMO/ana" --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])')
PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

$M space create market --home "$DEMO/ana"
CODE=$($M space invite market "$BEN" --home "$DEMO/ana" --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["invite"])')
$M space join "$CODE" --home "$DEMO/ben"

$M run --home "$DEMO/ana" --listen "/ip4/127.0.0.1/tcp/$PORT" --no-mdns 2>"$DEMO/ana.log" & pids+=($!)
sleep 3
$M run --home "$DEMO/ben" --listen /ip4/127.0.0.1/tcp/0 --no-mdns \
  --peer "/ip4/127.0.0.1/tcp/$PORT/p2p/$ANA_PEER" 2>"$DEMO/ben.log" & pids+=($!)
sleep 3

$M doc put market products tomatoes --home "$DEMO/ana" \
  --data '{"title":"Tomatoes","quantity":5,"unit":"kg","price":250,"currency":"EUR"}'
for _ in $(seq 1 20); do
  if $M doc get market products tomatoes --home "$DEMO/ben" --json | grep -q Tomatoes; then break; fi
  sleep 0.5
done
echo "--- Ben's node sees Ana's listing:"
$M doc get market products tomatoes --home "$DEMO/ben"
echo "--- Ben's status:"
$M status --home "$DEMO/ben"
