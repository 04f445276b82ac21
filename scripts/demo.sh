#!/usr/bin/env bash
# make demo: a devnet in a temporary directory (node, Ollama — simulated when
# no real one answers — and two miners), the spec's scenarios run against
# it, the report printed, and nothing left running.
set -uo pipefail
bin=$(realpath "${1:-build/aitbc}")
cd "$(dirname "$0")/.."
export AITBC_HOME
AITBC_HOME=$(mktemp -d /tmp/aitbc-demo-XXXXXX)
cleanup() { "$bin" devnet down >/dev/null 2>&1 && echo "== devnet stopped"; rm -rf "$AITBC_HOME"; }
trap cleanup EXIT
"$bin" devnet up --miners 2 || exit 1
url=$("$bin" config get url)
echo
echo "== the spec's scenarios against the devnet at $url"
AITBC_SCENARIO_ADMIN_KEY=$(cat "$AITBC_HOME/devnet/node/admin.key") "$bin" scenario run --url "$url" scenarios/
status=$?
echo
echo "== the devnet after the run (stopped and removed when this script exits)"
"$bin" devnet status
exit $status
