#!/usr/bin/env bash
# make demo: a devnet (node, Ollama — simulated when no real one answers —
# and two miners) in a fresh HOME, then the spec's scenarios typed there by
# one user, one after the other, the report printed, and nothing left running.
set -uo pipefail
bin=$(realpath "${1:-build/aitbc}")
cd "$(dirname "$0")/.."
unset AITBC_URL AITBC_CONFIG
home=$(mktemp -d /tmp/aitbc-demo-XXXXXX)
export AITBC_HOME=$home/.aitbc # this script's own commands see the ~/.aitbc of the scenarios' user
cleanup() { "$bin" devnet down >/dev/null 2>&1 && echo "== devnet stopped"; rm -rf "$home"; }
trap cleanup EXIT
"$bin" devnet up --miners 2 || exit 1
echo
echo "== the spec's scenarios, typed in that HOME after 'aitbc devnet up'"
"$bin" scenario run --home "$home" scenarios/
status=$?
echo
echo "== the devnet after the run (stopped and removed when this script exits)"
"$bin" devnet status
exit $status
