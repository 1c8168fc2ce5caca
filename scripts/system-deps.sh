#!/usr/bin/env bash
# Debian packages the tests need (real peers): install whatever is missing. Needs root (or sudo).
set -euo pipefail
pkgs=()
command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || pkgs+=(python3-venv)
if [ ${#pkgs[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${pkgs[@]}"
fi
