//! `tutti` command line: `tutti serve` runs the API and the media engine.

use anyhow::Context;
use clap::Parser;
use gstreamer as gst;
use tracing_subscriber::EnvFilter;
use tutti::config::{Cli, Command, Config};
use tutti::engine::Engine;
use tutti::media::profiles::Profiles;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    gst::init().context("initialising GStreamer")?;

    match cli.command {
        Command::CheckProfiles { pipelines } => {
            Profiles::load(&pipelines)?;
            println!("every profile in {} is usable", pipelines.display());
            Ok(())
        }
        Command::Serve(args) => {
            let config = Config::load(args)?;
            let profiles = Profiles::load(&config.pipelines_dir)
                .with_context(|| format!("checking the profiles in {}", config.pipelines_dir.display()))?;
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
    let engine = Engine::start(config, profiles);
    axum::serve(listener, tutti::api::app(engine.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    engine.shutdown().await;
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
