#!/usr/bin/env bash
# Installs every system package Tutti needs to build, run and be tested on Debian 12.
# Idempotent: apt-get skips what is already there. Needs root (or sudo).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  # build
  pkg-config build-essential
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  # tutti's own Opus elements link libopus (src/media/opus)
  libopus-dev
  # runtime media
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  gstreamer1.0-x fonts-dejavu-core  # gstreamer1.0-x carries the pango text overlay
  # independent judges and senders in tests and benchmarks
  ffmpeg
  # reads the names and initials drawn on the picture in the labels test
  tesseract-ocr
  # the RTMP ingest server the publisher tests push to; its stream module
  # terminates TLS in front of it for the rtmps:// tests
  nginx libnginx-mod-rtmp libnginx-mod-stream
  # health checks in scripts
  curl
  # benchmarks, and the webhook receiver of the events test
  python3
  # promtool judges /metrics in the events test
  prometheus
  # the web page test drives a headless browser
  chromium chromium-driver
  # the WebRTC browser tests run Chromium in a loopback-only network namespace:
  # `ip link set lo up` inside `unshare -n` (unshare is in util-linux, always there)
  iproute2
  # a real softphone dials in over SIP in the sip_baresip test (aufile, sndfile,
  # snapshot and ctrl_tcp are in -core; avcodec/avformat for H.264 and the clip in -ffmpeg)
  baresip-core baresip-ffmpeg
  # SIPp plays the SIP call flows (hold, re-INVITE, INFO, late offer, dial-out) in tests/sipp/
  sip-tester
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
