//! `tutti` command line: `tutti serve` runs the API and the media engine.

use anyhow::Context;
use clap::Parser;
use gstreamer as gst;
use tutti::config::{Cli, Command, Config};
use tutti::engine::{Engine, Services};
use tutti::rtmp::{RtmpServerConfig, start_server};
use tutti::media::profiles::Profiles;

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
            let config = Config::load(args)?;
            let profiles = Profiles::load(config.pipelines_dir.as_deref()).context("checking the encoder and decoder profiles")?;
            tracing::info!("profiles: {}", profiles.origins());
            tokio::runtime::Runtime::new()?.block_on(serve(config, profiles))
        }
    }
}

async fn serve(config: Config, profiles: Profiles) -> anyhow::Result<()> {
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
    let hls_dir = config.hls_dir.clone();
    let services = Services { runtime: tokio::runtime::Handle::current(), rtmp_server: Some(rtmp_server.clone()) };
    let engine = Engine::start(config, profiles, services);
    axum::serve(listener, tutti::api::app(engine.clone(), hls_dir))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    engine.shutdown().await;
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
