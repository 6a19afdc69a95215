#!/usr/bin/env bash
# Makes sure a PostgreSQL answers on 127.0.0.1:5432 with a database "test"
# that user postgres reaches without a password, for the tests: uses the
# one running, else starts a private server (installing Debian's
# postgresql package if it is missing). Prints the URL to use.
set -euo pipefail
url=postgres://postgres@127.0.0.1:5432/test
admin=postgres://postgres@127.0.0.1:5432/postgres
if command -v psql >/dev/null && psql "$url" -qtAc 'SELECT 1' >/dev/null 2>&1; then
  echo "$url"; exit 0
fi
if command -v psql >/dev/null && psql "$admin" -qtAc 'SELECT 1' >/dev/null 2>&1; then
  psql "$admin" -qc 'CREATE DATABASE test' >&2
  echo "$url"; exit 0
fi
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "postgresql not found; installing Debian's postgresql package" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d)
as=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$dir"; as=(runuser -u postgres --) # initdb refuses root
fi
"${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres >&2
"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w \
  -o "-p 5432 -k $dir -c listen_addresses=127.0.0.1" start >&2
psql "$admin" -qc 'CREATE DATABASE test' >&2
echo "$url"
