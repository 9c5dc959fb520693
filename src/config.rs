//! Configuration: defaults, overridden by an optional TOML file, overridden
//! by `TUTTI_*` environment variables, overridden by command-line flags.
//! clap resolves flag-over-environment; the file fills what both left unset.

use crate::ports::PortRange;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_HTTP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_RTP_PORTS: PortRange = PortRange { first: 20000, last: 20999 };
pub const DEFAULT_PUBLIC_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const DEFAULT_RTP_BIND: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
pub const DEFAULT_JITTER_BUFFER_MS: u32 = 40;
pub const DEFAULT_STALE_AFTER_SECS: u64 = 30;
pub const DEFAULT_RECORDINGS_DIR: &str = "recordings";
pub const DEFAULT_RTMP_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1935);

#[derive(Debug, Parser)]
#[command(name = "tutti", version, about = "Tutti: MCU and live-stream transcoder on GStreamer")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the REST API and the media engine.
    ///
    /// Every option can also be set in the TOML file given by --config (same
    /// names, with underscores: `rtp_ports = "20000-20999"`) or by an
    /// environment variable. Precedence: flag, then environment, then file,
    /// then default. Log level comes from RUST_LOG (default "info").
    Serve(ServeArgs),
    /// Check that every encoder/decoder profile (built in, or from
    /// --pipelines) parses and that all its GStreamer elements are
    /// installed, then exit.
    CheckProfiles {
        /// Directory whose encoders.toml and/or decoders.toml replace the
        /// built-in profiles [default: none, the built-in ones].
        #[arg(long, env = "TUTTI_PIPELINES")]
        pipelines: Option<PathBuf>,
    },
}

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Optional TOML configuration file.
    #[arg(long, env = "TUTTI_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address and port of the HTTP API [default: 127.0.0.1:8080].
    #[arg(long, env = "TUTTI_HTTP")]
    pub http: Option<SocketAddr>,
    /// UDP port range for RTP and RTCP, as FIRST-LAST [default: 20000-20999].
    /// Each caller takes two ports per medium (RTP, RTCP = RTP + 1).
    #[arg(long, env = "TUTTI_RTP_PORTS")]
    pub rtp_ports: Option<PortRange>,
    /// IP address written in SDP answers, where callers send their media
    /// [default: 127.0.0.1]. Set it to an address your callers can reach.
    #[arg(long, env = "TUTTI_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,
    /// Local address the RTP sockets bind to [default: 0.0.0.0].
    #[arg(long, env = "TUTTI_RTP_BIND")]
    pub rtp_bind: Option<IpAddr>,
    /// Jitter buffer of every incoming RTP stream, in milliseconds [default: 40].
    #[arg(long, env = "TUTTI_JITTER_BUFFER_MS")]
    pub jitter_buffer_ms: Option<u32>,
    /// Seconds without media after which a caller is marked `stale` [default: 30].
    #[arg(long, env = "TUTTI_STALE_AFTER_SECS")]
    pub stale_after_secs: Option<u64>,
    /// Directory whose encoders.toml and/or decoders.toml replace the
    /// built-in encoder/decoder profiles, each file its half
    /// [default: none, the built-in ones].
    #[arg(long, env = "TUTTI_PIPELINES")]
    pub pipelines: Option<PathBuf>,
    /// Directory that `record` outputs write under [default: recordings].
    #[arg(long, env = "TUTTI_RECORDINGS")]
    pub recordings: Option<PathBuf>,
    /// Directory for HLS segments and playlists [default: <temp dir>/tutti-hls].
    #[arg(long, env = "TUTTI_HLS_DIR")]
    pub hls_dir: Option<PathBuf>,
    /// Address of the embedded RTMP server that plays every composition at
    /// rtmp://ADDRESS/live/{composition_id} [default: 127.0.0.1:1935].
    #[arg(long, env = "TUTTI_RTMP_LISTEN")]
    pub rtmp_listen: Option<SocketAddr>,
}

/// The same settings as a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http: Option<SocketAddr>,
    rtp_ports: Option<PortRange>,
    public_ip: Option<IpAddr>,
    rtp_bind: Option<IpAddr>,
    jitter_buffer_ms: Option<u32>,
    stale_after_secs: Option<u64>,
    pipelines: Option<PathBuf>,
    recordings: Option<PathBuf>,
    hls_dir: Option<PathBuf>,
    rtmp_listen: Option<SocketAddr>,
}

/// Fully resolved settings of `tutti serve`.
#[derive(Clone, Debug)]
pub struct Config {
    pub http: SocketAddr,
    pub rtp_ports: PortRange,
    pub public_ip: IpAddr,
    pub rtp_bind: IpAddr,
    pub jitter_buffer: Duration,
    pub stale_after: Duration,
    /// Overrides of the built-in profiles (see `media::profiles`).
    pub pipelines_dir: Option<PathBuf>,
    pub recordings_dir: PathBuf,
    pub hls_dir: PathBuf,
    pub rtmp_listen: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(ServeArgs::default(), FileConfig::default())
    }
}

impl Config {
    pub fn load(args: ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading configuration file {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing configuration file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        Ok(Config::resolve(args, file))
    }

    fn resolve(args: ServeArgs, file: FileConfig) -> Config {
        Config {
            http: args.http.or(file.http).unwrap_or(DEFAULT_HTTP),
            rtp_ports: args.rtp_ports.or(file.rtp_ports).unwrap_or(DEFAULT_RTP_PORTS),
            public_ip: args.public_ip.or(file.public_ip).unwrap_or(DEFAULT_PUBLIC_IP),
            rtp_bind: args.rtp_bind.or(file.rtp_bind).unwrap_or(DEFAULT_RTP_BIND),
            jitter_buffer: Duration::from_millis(u64::from(
                args.jitter_buffer_ms.or(file.jitter_buffer_ms).unwrap_or(DEFAULT_JITTER_BUFFER_MS),
            )),
            stale_after: Duration::from_secs(
                args.stale_after_secs.or(file.stale_after_secs).unwrap_or(DEFAULT_STALE_AFTER_SECS),
            ),
            pipelines_dir: args.pipelines.or(file.pipelines),
            recordings_dir: args
                .recordings
                .or(file.recordings)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_RECORDINGS_DIR)),
            hls_dir: args.hls_dir.or(file.hls_dir).unwrap_or_else(|| std::env::temp_dir().join("tutti-hls")),
            rtmp_listen: args.rtmp_listen.or(file.rtmp_listen).unwrap_or(DEFAULT_RTMP_LISTEN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let file: FileConfig = toml::from_str(
            "http = \"0.0.0.0:9000\"\nrtp_ports = \"30000-30099\"\njitter_buffer_ms = 80\n",
        )
        .unwrap();
        let args = ServeArgs { jitter_buffer_ms: Some(60), ..Default::default() };
        let c = Config::resolve(args, file);
        assert_eq!(c.http, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(c.rtp_ports, PortRange { first: 30000, last: 30099 });
        assert_eq!(c.jitter_buffer, Duration::from_millis(60));
        assert_eq!(c.stale_after, Duration::from_secs(DEFAULT_STALE_AFTER_SECS));
        assert_eq!(c.public_ip, DEFAULT_PUBLIC_IP);
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        assert!(toml::from_str::<FileConfig>("htp = \"x\"").is_err());
    }
}
