#!/usr/bin/env bash
# Makes sure a Redis answers on 127.0.0.1:6379 for the tests: uses the one
# running, else starts redis-server (installing Debian's package if it is
# missing). Prints the URL to use.
set -euo pipefail
url=redis://127.0.0.1:6379/0
if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "$url"; exit 0
fi
if ! command -v redis-server >/dev/null; then
  echo "redis-server not found; installing Debian's redis-server package" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >&2
fi
dir=$(mktemp -d)
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
  --dir "$dir" --logfile "$dir/redis.log" >&2
for _ in $(seq 50); do
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then echo "$url"; exit 0; fi
  sleep 0.1
done
echo "redis-server did not start; see $dir/redis.log" >&2
exit 1
