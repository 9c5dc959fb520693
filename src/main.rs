//! `tutti` command line: `tutti serve` runs the API and the media engine.

use anyhow::Context;
use clap::Parser;
use gstreamer as gst;
use tutti::config::{Cli, Command, Config};
use tutti::api::Telemetry;
use tutti::engine::{Engine, Services};
use tutti::events::{EventBus, webhook};
use tutti::rtmp::{RtmpServerConfig, RtmpsTrust, start_server};
use tutti::media::profiles::Profiles;
use tutti::webrtc::WebRtcServer;
use std::net::SocketAddr;
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tutti::logging::init();
    gst::init().context("initialising GStreamer")?;

    match cli.command {
        Command::CheckProfiles { pipelines } => {
            let profiles = Profiles::load(pipelines.as_deref())?;
            println!("every profile is usable: {}", profiles.origins());
            Ok(())
        }
        Command::Serve(args) => {
            let config = Config::load(*args)?;
            // Before anything listens: a bad CA file is a start-up error, not a
            // surprise at the first rtmps:// publish.
            let rtmps_trust = RtmpsTrust::load(config.rtmps_ca_file.as_deref())
                .context("loading the certificate authorities rtmps:// outputs trust (--rtmps-ca-file)")?;
            let sources = rtmps_trust.sources();
            tracing::info!(
                bundled = sources.bundled, system = sources.system, operator = sources.operator,
                "rtmps:// outputs trust these certificate authorities"
            );
            config.check_access()?;
            let profiles = Profiles::load(config.pipelines_dir.as_deref()).context("checking the encoder and decoder profiles")?;
            tracing::info!("profiles: {}", profiles.origins());
            tokio::runtime::Runtime::new()?.block_on(serve(config, profiles, rtmps_trust))
        }
    }
}

async fn serve(config: Config, profiles: Profiles, rtmps_trust: RtmpsTrust) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding the HTTP API to {}", config.http))?;
    tracing::info!(
        http = %config.http, rtp_ports = %config.rtp_ports, public_ip = %config.public_ip,
        jitter_buffer_ms = config.jitter_buffer.as_millis() as u64,
        "Tutti serving"
    );
    let rtmp_server = start_server(RtmpServerConfig { listen: config.rtmp_listen, ..Default::default() })
        .await
        .with_context(|| format!("starting the embedded RTMP server on {} (--rtmp-listen)", config.rtmp_listen))?;
    tracing::info!(rtmp = %rtmp_server.local_addr(), "embedded RTMP server plays rtmp://{}/live/{{composition_id}}", rtmp_server.local_addr());
    let webrtc_bind = SocketAddr::new(config.rtp_bind, config.webrtc_udp);
    let webrtc = Arc::new(
        WebRtcServer::start(webrtc_bind, config.public_ip).with_context(|| format!("starting the WebRTC server on UDP {webrtc_bind} (--webrtc-udp)"))?,
    );
    let hls_dir = config.hls_dir.clone();
    let events = EventBus::new();
    let webhooks = webhook::start(&events, config.webhooks.clone());
    if !config.webhooks.urls.is_empty() {
        tracing::info!(receivers = config.webhooks.urls.len(), "events are POSTed to the webhooks, signed");
    }
    let guards = tutti::guards::ApiGuards::new(&config);
    if !guards.requires_tokens() {
        tracing::info!(http = %config.http, "the API is open: no token configured (TUTTI_API_TOKENS / api_tokens)");
    }
    let services = Services {
        runtime: tokio::runtime::Handle::current(),
        rtmps_trust,
        rtmp_server: Some(rtmp_server.clone()),
        webrtc: Some(webrtc.clone()),
        events: events.clone(),
    };
    let (sip_settings, media_encryption) = (config.sip.clone(), config.media_encryption);
    let engine = Engine::start(config, profiles, services);
    let sip = tutti::sip::start(&sip_settings, media_encryption, engine.clone(), events.clone(), guards.joins())
        .await
        .with_context(|| format!("starting SIP on {:?} (--sip-listen; an empty value turns SIP off)", sip_settings.listen))?;
    axum::serve(listener, tutti::api::app(engine.clone(), hls_dir, guards, Telemetry { events, webhooks, sip: sip.as_ref().map(|s| s.stats()).unwrap_or_default() }))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    if let Some(sip) = &sip {
        sip.shutdown().await;
    }
    engine.shutdown().await;
    webrtc.shutdown();
    rtmp_server.shutdown();
    tracing::info!("stopped: every pipeline and port released");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}
