#!/usr/bin/env bash
# Debian packages the tests need (real peers): install whatever is missing. Needs root (or sudo).
# redis-server: queue/lease tests; ffmpeg + GStreamer RTSP server (for the system python3): live sources;
# chromium (+ chromium-driver): the WebRTC sender and web-page tests, driven by Playwright.
# docker-compose (1.29): tests/deploy validates docker-compose.yml with `docker-compose config` (no engine needed).
set -euo pipefail
pkgs=()
command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || pkgs+=(python3-venv)
command -v ffmpeg >/dev/null 2>&1 || pkgs+=(ffmpeg)
if ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer','1.0')" >/dev/null 2>&1; then
  pkgs+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
         gstreamer1.0-plugins-ugly gstreamer1.0-libav)
fi
[ -x /usr/lib/chromium/chromium ] || pkgs+=(chromium chromium-driver fonts-liberation)
command -v docker-compose >/dev/null 2>&1 || pkgs+=(docker-compose)
if [ ${#pkgs[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${pkgs[@]}"
fi
