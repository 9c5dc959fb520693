#!/usr/bin/env bash
# Quick start, command 2: install what Tutti needs and run the whole suite:
# unit tests, SDP fixtures, API tests and the media integration tests with
# real RTP over loopback (gst-launch senders, ffmpeg as the judge).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
start=$(date +%s)
# One test at a time: the media tests run real encoders, senders and
# judges, and two of them at once overload a 2-core machine.
# A suite run builds Tutti once from scratch (CI's clean clone): incremental
# caches cost 11 s there and pay only on rebuilds. Set CARGO_INCREMENTAL=1 to keep them.
CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}" cargo test --locked --no-fail-fast "$@" -- --test-threads=1
# Every benchmark runs in its smoke mode: it runs and measures something sane (bench/README.md).
timeout 120 python3 bench/cpu_composite.py --smoke
timeout 120 python3 bench/latency.py --smoke
timeout 120 python3 bench/scale.py --smoke
timeout 160 python3 bench/soak.py --smoke
echo "suite took $(( $(date +%s) - start )) s"
