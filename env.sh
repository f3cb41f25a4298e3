#!/usr/bin/env bash
# Open CAP's development shell (env.nix): Python 3.11, Node.js, the linters,
# the Docker and ssh clients, tcmalloc, and the cap:* aliases it greets you with.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v nix-shell >/dev/null; then
    echo "env.sh needs Nix (https://nixos.org/download); without it, use the plain commands in README.md." >&2
    exit 1
fi
exec nix-shell env.nix "$@"
