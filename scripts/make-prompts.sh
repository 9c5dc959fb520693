#!/bin/bash
# Regenerates the spoken prompts in assets/prompts/ (the PIN entry's), with
# espeak-ng and ffmpeg: Opus in Ogg, mono, 24 kbit/s. They are committed;
# this only needs running to change their words or voice.
set -euo pipefail
apt-get install -y espeak-ng ffmpeg >/dev/null
cd "$(dirname "$0")/../assets/prompts"
say() {
    local name=$1 text=$2 wav
    wav=$(mktemp --suffix .wav)
    espeak-ng -v en-us -s 150 -w "$wav" "$text"
    ffmpeg -hide_banner -loglevel error -y -i "$wav" -ac 1 -ar 48000 -c:a libopus -b:a 24k "$name.ogg"
    rm -f "$wav"
}
say enter-pin "Welcome. Please enter the meeting PIN, followed by the pound key."
say wrong-pin "That PIN is not correct. Please try again."
say rejected "That PIN is not correct. Goodbye."
say timed-out "No PIN was entered. Goodbye."
