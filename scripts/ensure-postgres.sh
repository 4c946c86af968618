#!/usr/bin/env bash
# Installs PostgreSQL from Debian when no server binaries are present.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL is missing: install the Debian package 'postgresql' (needs root)." >&2
  exit 1
fi
echo "Installing PostgreSQL from Debian..."
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
