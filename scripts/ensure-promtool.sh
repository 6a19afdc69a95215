#!/usr/bin/env bash
# Makes sure promtool (Prometheus's metrics checker, used by the metrics
# tests) is on PATH: installs Debian's prometheus package when it is not.
# Prints promtool's path.
set -euo pipefail
if ! command -v promtool >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "promtool not found: installing Debian's prometheus package" >&2
  $sudo apt-get install -y --no-install-recommends prometheus >&2 ||
    { $sudo apt-get update >&2 && $sudo apt-get install -y --no-install-recommends prometheus >&2; }
fi
command -v promtool
