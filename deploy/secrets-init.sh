#!/bin/sh
# The signing secret of the docker-compose stack (`secrets-init`, run once
# before every Inlet service). The repository ships no secret: on first
# start, 32 random bytes (64 hex digits) are written to
# $INLET_SECRETS_DIR/signing-1, and kept on later starts. A secret given in
# INLET_SIGNING_SECRET (e.g. `INLET_SIGNING_SECRET=$(openssl rand -hex 32)
# docker compose up`) is written instead, over the stored one.
# The Inlet services read the file through
# INLET__SIGNING__SECRET_FILES__1 (docs/configuration.md).
set -eu
dir=${INLET_SECRETS_DIR:-/run/inlet/secrets}
file="$dir/signing-1"
umask 077
mkdir -p "$dir"
if [ "$(id -u)" = 0 ]; then
  chmod 0755 "$dir" # the services (65532) reach the file; only they read it
fi
if [ -n "${INLET_SIGNING_SECRET:-}" ]; then
  printf '%s\n' "$INLET_SIGNING_SECRET" >"$file.new"
  echo "secrets-init: using the signing secret from INLET_SIGNING_SECRET"
elif [ ! -s "$file" ]; then
  od -An -vtx1 -N32 /dev/urandom | tr -d ' \n' >"$file.new"
  echo >>"$file.new"
  echo "secrets-init: generated a new signing secret (id 1)"
else
  echo "secrets-init: keeping the stored signing secret (id 1)"
  exit 0
fi
# Readable by the Inlet services only (they run as 65532).
if [ "$(id -u)" = 0 ]; then
  chown 65532:65532 "$file.new"
fi
chmod 0400 "$file.new"
mv -f "$file.new" "$file"
