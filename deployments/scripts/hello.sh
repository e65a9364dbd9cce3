#!/usr/bin/env bash
# Greets each argument; exits 3 when given none.
set -euo pipefail
if [ "$#" -eq 0 ]; then
  echo "usage: hello.sh NAME..." >&2
  exit 3
fi
for name in "$@"; do
  printf 'hello, %s\n' "$name"
done
