#!/usr/bin/env bash
# Quick start, command 1: install what Tutti needs, build it, and serve
# (HTTP API on 127.0.0.1:8080, RTP ports 20000-20999). Extra arguments go
# to `tutti serve`, e.g. ./scripts/run.sh --public-ip 192.0.2.10
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked
exec ./target/release/tutti serve "$@"
