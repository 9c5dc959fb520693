#!/usr/bin/env bash
# A synthetic RTP caller for demos: joins a Tutti composition (creating it
# if needed) and sends a coloured moving test picture with its name on it
# (H.264) and a tone (Opus), like a room system would, with gst-launch-1.0.
#
#   TUTTI_URL=http://127.0.0.1:8080 CALLER_NAME="Room A" PATTERN=ball TONE_HZ=440 \
#   COMPOSITION_NAME=demo ./scripts/synthetic-caller.sh
set -euo pipefail

TUTTI_URL=${TUTTI_URL:-http://127.0.0.1:8080}
CALLER_NAME=${CALLER_NAME:-Synthetic caller}
COMPOSITION_NAME=${COMPOSITION_NAME:-demo}
PATTERN=${PATTERN:-smpte}
TONE_HZ=${TONE_HZ:-440}
# Where this caller would receive Tutti's return streams (it only sends,
# so it offers sendonly; the ports still have to be valid).
LOCAL_IP=${LOCAL_IP:-127.0.0.1}
RECV_PORT=${RECV_PORT:-$((40000 + RANDOM % 10000 * 2))}
# Lets a second caller find the composition the first one created.
sleep "${START_DELAY_SECS:-0}"

for _ in $(seq 1 60); do
  curl -fsS "$TUTTI_URL/healthz" >/dev/null 2>&1 && break
  sleep 1
done

# The first composition with our name, or a new one.
composition=$(curl -fsS "$TUTTI_URL/v1/compositions" \
  | grep -o "\"id\":\"[0-9a-f]*\",\"name\":\"$COMPOSITION_NAME\"" | head -n1 | cut -d'"' -f4 || true)
if [ -z "$composition" ]; then
  composition=$(curl -fsS -X POST "$TUTTI_URL/v1/compositions" -H 'content-type: application/json' \
    -d "{\"name\":\"$COMPOSITION_NAME\"}" | grep -o '"id":"[0-9a-f]*"' | head -n1 | cut -d'"' -f4)
fi

# The offer as a JSON string (CRLF line ends written as \r\n escapes), so
# the request can carry the caller's name too.
offer=$(printf 'v=0\\r\\no=- 1 1 IN IP4 %s\\r\\ns=-\\r\\nc=IN IP4 %s\\r\\nt=0 0\\r\\nm=audio %d RTP/AVP 111\\r\\na=rtpmap:111 opus/48000/2\\r\\na=sendonly\\r\\nm=video %d RTP/AVP 96\\r\\na=rtpmap:96 H264/90000\\r\\na=fmtp:96 packetization-mode=1;profile-level-id=42e01f\\r\\na=sendonly\\r\\n' \
  "$LOCAL_IP" "$LOCAL_IP" "$RECV_PORT" "$((RECV_PORT + 2))")
joined=$(curl -fsS -X POST "$TUTTI_URL/v1/compositions/$composition/participants" \
  -H 'content-type: application/json' --data-binary "{\"name\":\"$CALLER_NAME\",\"sdp\":\"$offer\"}")
answer=$(printf '%s' "$joined" | grep -o '"sdp":"[^"]*"' | cut -d'"' -f4 | sed 's/\\r\\n/\n/g')

tutti_ip=$(printf '%s\n' "$answer" | sed -n 's/^c=IN IP4 \([0-9.]*\).*/\1/p' | head -n1)
audio_port=$(printf '%s\n' "$answer" | sed -n 's/^m=audio \([0-9]*\) .*/\1/p')
video_port=$(printf '%s\n' "$answer" | sed -n 's/^m=video \([0-9]*\) .*/\1/p')
echo "$CALLER_NAME joined composition $composition: sending to $tutti_ip audio $audio_port video $video_port"

exec gst-launch-1.0 -q \
  videotestsrc is-live=true pattern="$PATTERN" ! video/x-raw,width=640,height=360,framerate=30/1 \
  ! textoverlay text="$CALLER_NAME" font-desc="Sans Bold 36" valignment=top \
  ! clockoverlay valignment=bottom halignment=right \
  ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=800 key-int-max=30 \
  ! rtph264pay pt=96 config-interval=-1 mtu=1200 ! udpsink host="$tutti_ip" port="$video_port" \
  audiotestsrc is-live=true wave=sine freq="$TONE_HZ" volume=0.3 ! audioconvert ! audioresample \
  ! opusenc ! rtpopuspay pt=111 ! udpsink host="$tutti_ip" port="$audio_port"
