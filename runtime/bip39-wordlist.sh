#!/bin/sh
# Writes the BIP-39 English wordlist as a Lua module (embedded in the
# binary), taken from Debian's python3-mnemonic and checked against the
# list's published SHA-256 first.   runtime/bip39-wordlist.sh OUT.lua
set -eu
src=$(dpkg -L python3-mnemonic 2>/dev/null | grep 'wordlist/english.txt$' | head -n 1 || true)
if [ -z "$src" ]; then echo "bip39-wordlist: python3-mnemonic is not installed (run make deps)" >&2; exit 1; fi
echo "2f5eed53a4727b4bf8880d8f3f199efc90e58503646d9ff8eff3a2ed3b24dbda  $src" | sha256sum -c --quiet ||
  { echo "bip39-wordlist: $src does not have the published SHA-256" >&2; exit 1; }
mkdir -p "$(dirname "$1")"
{ printf -- '-- The BIP-39 English wordlist, from %s (SHA-256 checked at build time).\nreturn [[\n' "$src"
  cat "$src"; printf ']]\n'; } > "$1"
