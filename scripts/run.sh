#!/usr/bin/env bash
# Quick start, command 1: install what Tutti needs, build it, and run the
# demo: `tutti serve` with one composition ("demo", with HLS) and four
# synthetic callers (moving test pictures with their names, a tone each).
# Watch it at http://127.0.0.1:8080/ or with ffplay through the embedded
# RTMP server, join it from a browser at /join/<id> (the URLs are printed). Ctrl-C stops everything.
# Extra arguments go to `tutti serve`, e.g. ./scripts/run.sh --public-ip 192.0.2.10
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked

HTTP=${TUTTI_HTTP:-127.0.0.1:8080}
./target/release/tutti serve --http "$HTTP" "$@" &
server=$!
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT INT TERM

for _ in $(seq 1 50); do curl -fsS "http://$HTTP/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
composition=$(curl -fsS -X POST "http://$HTTP/v1/compositions" -H 'content-type: application/json' \
  -d '{"name":"demo","outputs":[{"kind":"hls"}],"layout":{"background":"#14171c","overlays":[{"image":"tutti-logo.png","x":0.83,"y":0.03,"width":0.14}]}}')
id=$(printf '%s' "$composition" | grep -o '"id":"[0-9a-f]*"' | head -n1 | cut -d'"' -f4)
play=$(printf '%s' "$composition" | grep -o '"rtmp_play_url":"[^"]*"' | cut -d'"' -f4)

start_caller() {
  CALLER_NAME="$1" PATTERN="$2" TONE_HZ="$3" RECV_PORT="$4" COMPOSITION_NAME=demo TUTTI_URL="http://$HTTP" \
    bash scripts/synthetic-caller.sh >/dev/null 2>&1 &
}
start_caller "Studio A" ball 440 40000
start_caller "Studio B" pinwheel 554 40010
start_caller "Room 4B" smpte 659 40020
start_caller "Guest" spokes 880 40030

cat <<TXT

Tutti demo running (composition $id, four callers joining).
  Browser:  http://$HTTP/   (the programme over WebRTC; ?player=hls for HLS)
  Join:     http://$HTTP/join/$id   (a guest with camera and microphone)
  ffplay:   ffplay $play
  API:      curl -s http://$HTTP/v1/compositions/$id
  Dial in:  a softphone on this machine calls sip:demo@127.0.0.1:5060 (baresip: /dial sip:demo@127.0.0.1)
  Push to a CDN:
    curl -X POST http://$HTTP/v1/compositions/$id/outputs -H 'content-type: application/json' \\
         -d '{"kind":"rtmp","url":"rtmp://a.rtmp.youtube.com/live2/YOUR-STREAM-KEY"}'
Ctrl-C stops the demo.
TXT
wait "$server"
