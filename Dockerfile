# Tutti server image. Build: docker build -t tutti .
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libopus-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The default encoder/decoder profiles are compiled in (include_str!).
COPY pipelines ./pipelines
# The web page and hls.js are built into the binary.
COPY assets ./assets
RUN cargo build --release --locked --bin tutti

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
      gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav \
      gstreamer1.0-x fonts-dejavu-core libopus0 curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/tutti /usr/local/bin/tutti
# The profiles are built in; these copies are examples to edit. Mount a
# directory with your encoders.toml and/or decoders.toml and set
# TUTTI_PIPELINES to it to override them.
COPY pipelines /usr/share/doc/tutti/pipelines
COPY scripts/synthetic-caller.sh /usr/local/bin/synthetic-caller
# Images a layout may name as its background or overlays; mount your own
# directory over it (or set TUTTI_BRANDING_DIR) to brand the picture.
COPY assets/branding /usr/share/tutti/branding
# The API listens on every interface here, so `serve` refuses to start
# without an admin token: run with -e TUTTI_API_TOKENS=<16+ characters>
# (or -e TUTTI_INSECURE_NO_AUTH=true to serve it open on purpose).
# docker-compose.yml binds 127.0.0.1 on the host network instead: open, as the demo.
# SIP listens on every interface too; only loopback may call until
# TUTTI_SIP_TRUSTED_NETWORKS names the networks of your PBXs and SBCs (or
# TUTTI_SIP_USERS gives callers a password).
ENV TUTTI_HTTP=0.0.0.0:8080 \
    TUTTI_RTMP_LISTEN=0.0.0.0:1935 \
    TUTTI_SIP_LISTEN=0.0.0.0:5060 \
    TUTTI_RECORDINGS=/var/lib/tutti/recordings \
    TUTTI_BRANDING_DIR=/usr/share/tutti/branding \
    RUST_LOG=info
VOLUME /var/lib/tutti/recordings
# 8890-8989/udp: one port per SRT participant (--srt-ports); srtsrc and tsdemux
# come with gstreamer1.0-plugins-bad above.
EXPOSE 8080 1935 5060/udp 5060/tcp 20000-20999/udp 8890-8989/udp 8189/udp
ENTRYPOINT ["tutti"]
CMD ["serve"]
