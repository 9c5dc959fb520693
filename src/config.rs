//! Configuration: defaults, overridden by an optional TOML file, overridden
//! by `TUTTI_*` environment variables, overridden by command-line flags.
//! clap resolves flag-over-environment; the file fills what both left unset.

use crate::events::webhook::WebhookConfig;
use crate::model::sdp::crypto::MediaEncryption;
use crate::model::source_check::SourceCheckMode;
use crate::model::admission::{Budget, Cores, CostModel};
use crate::ports::PortRange;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use crate::model::composition::CompositionConfig;
use crate::sip::{RouteRule, Rules};
use ipnet::IpNet;
use std::collections::HashMap;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_HTTP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_RTP_PORTS: PortRange = PortRange { first: 20000, last: 20999 };
/// From 8890, the port MediaMTX and many SRT guides use: one per SRT participant.
pub const DEFAULT_SRT_PORTS: PortRange = PortRange { first: 8890, last: 8989 };
pub const DEFAULT_PUBLIC_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const DEFAULT_RTP_BIND: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
pub const DEFAULT_JITTER_BUFFER_MS: u32 = 40;
pub const DEFAULT_STALE_AFTER_SECS: u64 = 30;
/// An RTMP publisher that drops (OBS reconnecting after a network hiccup)
/// keeps its participant and cell if it is back within this.
pub const DEFAULT_PUBLISHER_RETURN_SECS: u64 = 30;
pub const DEFAULT_RECORDINGS_DIR: &str = "recordings";
pub const DEFAULT_BRANDING_DIR: &str = "assets/branding";
pub const DEFAULT_RTMP_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1935);
pub const DEFAULT_SIP_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060);
/// An SDP offer is a few kilobytes; a JSON body less.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Generous: the cost budget is what normally limits a node; these catch runaway clients.
pub const DEFAULT_MAX_COMPOSITIONS: usize = 100;
pub const DEFAULT_MAX_PARTICIPANTS: usize = 1000;
/// Joins per second per node, sustained, and the burst above that rate.
pub const DEFAULT_JOIN_RATE: f64 = 50.0;
pub const DEFAULT_JOIN_BURST: u32 = 100;
/// Shorter admin tokens are refused at start-up: they could be guessed.
pub const MIN_API_TOKEN_LEN: usize = 16;

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
    Serve(Box<ServeArgs>),
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
    /// Local address the RTP sockets and SRT listeners bind to [default: 0.0.0.0].
    #[arg(long, env = "TUTTI_RTP_BIND")]
    pub rtp_bind: Option<IpAddr>,
    /// UDP port range for SRT publishers, as FIRST-LAST [default: 8890-8989]:
    /// each SRT participant listens on one port of it.
    #[arg(long, env = "TUTTI_SRT_PORTS")]
    pub srt_ports: Option<PortRange>,
    /// UDP port every WebRTC guest's media shares, bound on --rtp-bind and
    /// announced on --public-ip [default: 8189]; 0 picks a free one.
    #[arg(long, env = "TUTTI_WEBRTC_UDP")]
    pub webrtc_udp: Option<u16>,
    /// Jitter buffer of every incoming RTP stream, in milliseconds [default: 40].
    #[arg(long, env = "TUTTI_JITTER_BUFFER_MS")]
    pub jitter_buffer_ms: Option<u32>,
    /// Seconds without media after which a caller is marked `stale` [default: 30].
    #[arg(long, env = "TUTTI_STALE_AFTER_SECS")]
    pub stale_after_secs: Option<u64>,
    /// Seconds an RTMP participant's publisher that stopped has to come back
    /// to the same participant and cell before the participant leaves [default: 30].
    #[arg(long, env = "TUTTI_PUBLISHER_RETURN_SECS")]
    pub publisher_return_secs: Option<u64>,
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
    /// Directory of the images a layout names as its `background` or its
    /// `overlays` (PNG or JPEG, by plain file name) [default: assets/branding].
    /// A layout naming a file that is not there is refused with a 400.
    #[arg(long, env = "TUTTI_BRANDING_DIR")]
    pub branding_dir: Option<PathBuf>,
    /// Address of the embedded RTMP server that plays every composition at
    /// rtmp://ADDRESS/live/{composition_id} and takes RTMP participants'
    /// publishers at rtmp://ADDRESS/ingest/{stream_key} [default: 127.0.0.1:1935].
    #[arg(long, env = "TUTTI_RTMP_LISTEN")]
    pub rtmp_listen: Option<SocketAddr>,
    /// Where SIP endpoints call in, over UDP and TCP on the same port
    /// [default: 127.0.0.1:5060]; an empty value turns SIP off.
    /// `sip:ROOM@ADDRESS` joins the composition whose id or name is ROOM.
    #[arg(long, env = "TUTTI_SIP_LISTEN")]
    pub sip_listen: Option<String>,
    /// Where SIP over TLS (RFC 3261 §26) listens, e.g. 0.0.0.0:5061
    /// [default: off]; needs --sip-tls-cert and --sip-tls-key.
    #[arg(long, env = "TUTTI_SIP_TLS_LISTEN")]
    pub sip_tls_listen: Option<SocketAddr>,
    /// PEM certificate chain SIP over TLS presents.
    #[arg(long, env = "TUTTI_SIP_TLS_CERT")]
    pub sip_tls_cert: Option<PathBuf>,
    /// PEM private key of --sip-tls-cert.
    #[arg(long, env = "TUTTI_SIP_TLS_KEY")]
    pub sip_tls_key: Option<PathBuf>,
    /// The host (name or IP) SIP peers should reach this node at, written in
    /// Contact headers, when it sits behind NAT [default: the listen address].
    #[arg(long, env = "TUTTI_SIP_PUBLIC_ADDRESS")]
    pub sip_public_address: Option<String>,
    /// Networks (CIDR, e.g. 192.0.2.0/24 for a PBX or an SBC) whose calls are
    /// taken without a password [default: loopback, 127.0.0.0/8 and ::1;
    /// naming networks replaces it]. Other callers must authenticate as a
    /// --sip-user, or get 403 Forbidden.
    #[arg(long = "sip-trusted-network", env = "TUTTI_SIP_TRUSTED_NETWORKS", value_delimiter = ',')]
    pub sip_trusted_networks: Vec<IpNet>,
    /// NAME:PASSWORD of a user who may call from anywhere, after a digest
    /// challenge (401, SHA-256 or MD5); repeat for several users.
    #[arg(long = "sip-user", env = "TUTTI_SIP_USERS", value_delimiter = ',', hide_env_values = true)]
    pub sip_users: Vec<String>,
    /// Where dial-outs (`POST .../participants` with a `sip_uri`) are sent,
    /// as IP:PORT (a PBX, a carrier's SBC) [default: straight to the URI's host].
    #[arg(long, env = "TUTTI_SIP_OUTBOUND_PROXY")]
    pub sip_outbound_proxy: Option<SocketAddr>,
    /// The user dial-outs authenticate as when the proxy or the callee
    /// challenges (401/407 digest), with --sip-password.
    #[arg(long, env = "TUTTI_SIP_USERNAME")]
    pub sip_username: Option<String>,
    /// The digest password of --sip-username.
    #[arg(long, env = "TUTTI_SIP_PASSWORD", hide_env_values = true)]
    pub sip_password: Option<String>,
    /// URL every event is POSTed to, signed with --webhook-secret; repeat
    /// the option (or separate with commas) for several receivers.
    #[arg(long = "webhook-url", env = "TUTTI_WEBHOOK_URLS", value_delimiter = ',')]
    pub webhook_urls: Vec<String>,
    /// Key of the HMAC-SHA256 signature in each webhook's `Tutti-Signature`
    /// header; required with --webhook-url.
    #[arg(long, env = "TUTTI_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// PEM file of extra certificate authorities that `rtmps://` outputs
    /// trust, for an origin behind a private CA (one or more certificates).
    /// Always trusted as well: the bundled Mozilla roots and the system
    /// store (/etc/ssl/certs, or SSL_CERT_FILE / SSL_CERT_DIR). A file that
    /// cannot be read or holds no usable certificate stops start-up.
    #[arg(long, env = "TUTTI_RTMPS_CA_FILE")]
    pub rtmps_ca_file: Option<PathBuf>,
    /// Which packets at a caller's ports are taken as its media [default: latch].
    /// `latch`: only the first source address and port that sends valid RTP
    /// with a negotiated payload type (from anywhere: NAT), and a new one
    /// after 2 s of silence from it. `strict`: as latch, from the address in
    /// the caller's offer only. `off`: any packet. Rejected packets are
    /// counted per medium (`packets_rejected`).
    #[arg(long, env = "TUTTI_RTP_SOURCE_CHECK")]
    pub rtp_source_check: Option<SourceCheckMode>,
    /// Whether callers' media is encrypted with SRTP (keys in the SDP,
    /// `RTP/SAVP` with `a=crypto`, RFC 4568) [default: optional].
    /// `optional`: SRTP when the caller offers it, plain RTP when it offers
    /// that. `required`: plain RTP m-lines are declined. `off`: SRTP m-lines
    /// are declined. An offer left with nothing is refused (HTTP 415).
    #[arg(long, env = "TUTTI_MEDIA_ENCRYPTION")]
    pub media_encryption: Option<MediaEncryption>,
    /// Admin API tokens, comma-separated (each at least 16 characters); clients send
    /// `Authorization: Bearer TOKEN`. Prefer the environment or the file to the flag,
    /// which other users can see in the process list. With none, the API is open,
    /// which `serve` allows only on a loopback address (see --insecure-no-auth).
    #[arg(long, env = "TUTTI_API_TOKENS", value_delimiter = ',', hide_env_values = true)]
    pub api_tokens: Vec<String>,
    /// Secret that signs per-composition tokens (POST /v1/compositions/{id}/tokens)
    /// [default: random at each start, so such tokens die with a restart].
    #[arg(long, env = "TUTTI_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Serve the API without any token on a non-loopback address, on purpose.
    #[arg(long, env = "TUTTI_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Serve GET /metrics without a token (it needs an admin token otherwise).
    #[arg(long, env = "TUTTI_METRICS_PUBLIC")]
    pub metrics_public: bool,
    /// Largest request body, in bytes; larger ones get 413 [default: 1048576].
    #[arg(long, env = "TUTTI_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most compositions this node runs at once; more get 503 [default: 100].
    #[arg(long, env = "TUTTI_MAX_COMPOSITIONS")]
    pub max_compositions: Option<usize>,
    /// Most participants in all compositions of this node; more get 503 [default: 1000].
    #[arg(long, env = "TUTTI_MAX_PARTICIPANTS")]
    pub max_participants: Option<usize>,
    /// Joins per second this node accepts, sustained (API POSTs and SIP INVITEs); faster get 429 (SIP: 503). 0: no limit [default: 50].
    #[arg(long, env = "TUTTI_JOIN_RATE")]
    pub join_rate: Option<f64>,
    /// Joins accepted at once above --join-rate [default: 100].
    #[arg(long, env = "TUTTI_JOIN_BURST")]
    pub join_burst: Option<u32>,
    /// CPU cores this node commits to compositions, callers and outputs; what would
    /// exceed it gets 503 over_capacity. 0 turns admission off
    /// [default: 0.8 × the cores available].
    #[arg(long, env = "TUTTI_CPU_BUDGET")]
    pub cpu_budget: Option<f64>,
    /// Cost in cores of a 1280x720 30 fps composition; other sizes scale by pixels × fps [default: 0.60].
    #[arg(long, env = "TUTTI_COST_COMPOSITION_720P30")]
    pub cost_composition_720p30: Option<f64>,
    /// Cost in cores of a caller that sends video [default: 0.10].
    #[arg(long, env = "TUTTI_COST_VIDEO_CALLER")]
    pub cost_video_caller: Option<f64>,
    /// Cost in cores of an audio-only caller [default: 0.02].
    #[arg(long, env = "TUTTI_COST_AUDIO_CALLER")]
    pub cost_audio_caller: Option<f64>,
    /// Cost in cores of an output [default: 0.03].
    #[arg(long, env = "TUTTI_COST_OUTPUT")]
    pub cost_output: Option<f64>,
}

/// The same settings as a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http: Option<SocketAddr>,
    rtp_ports: Option<PortRange>,
    public_ip: Option<IpAddr>,
    rtp_bind: Option<IpAddr>,
    srt_ports: Option<PortRange>,
    webrtc_udp: Option<u16>,
    jitter_buffer_ms: Option<u32>,
    stale_after_secs: Option<u64>,
    publisher_return_secs: Option<u64>,
    pipelines: Option<PathBuf>,
    recordings: Option<PathBuf>,
    hls_dir: Option<PathBuf>,
    branding_dir: Option<PathBuf>,
    rtmp_listen: Option<SocketAddr>,
    sip_listen: Option<String>,
    sip_public_address: Option<String>,
    sip_tls_listen: Option<SocketAddr>,
    sip_tls_cert: Option<PathBuf>,
    sip_tls_key: Option<PathBuf>,
    sip_trusted_networks: Option<Vec<IpNet>>,
    sip_users: Option<Vec<String>>,
    /// Dial-plan rules (`[[sip_routes]]`) and the compositions ad-hoc rooms are made from.
    sip_routes: Option<Vec<RouteRule>>,
    sip_templates: Option<HashMap<String, CompositionConfig>>,
    sip_outbound_proxy: Option<SocketAddr>,
    sip_username: Option<String>,
    sip_password: Option<String>,
    webhook_urls: Option<Vec<String>>,
    webhook_secret: Option<String>,
    rtmps_ca_file: Option<PathBuf>,
    rtp_source_check: Option<SourceCheckMode>,
    media_encryption: Option<MediaEncryption>,
    api_tokens: Option<Vec<String>>,
    token_secret: Option<String>,
    insecure_no_auth: Option<bool>,
    metrics_public: Option<bool>,
    max_body_bytes: Option<usize>,
    max_compositions: Option<usize>,
    max_participants: Option<usize>,
    join_rate: Option<f64>,
    join_burst: Option<u32>,
    cpu_budget: Option<f64>,
    cost_composition_720p30: Option<f64>,
    cost_video_caller: Option<f64>,
    cost_audio_caller: Option<f64>,
    cost_output: Option<f64>,
}

/// The SIP user agent's settings (see `crate::sip`).
#[derive(Clone, Debug)]
pub struct SipSettings {
    /// `None`: SIP is off.
    pub listen: Option<SocketAddr>,
    pub public_address: Option<String>,
    pub tls: Option<SipTlsFiles>,
    /// Whose calls are taken without a password (loopback unless configured).
    pub trusted_networks: Vec<IpNet>,
    pub users: Vec<SipUser>,
    pub routes: Rules,
    /// By name: what an ad-hoc room is made of.
    pub templates: HashMap<String, CompositionConfig>,
    /// Where dial-outs go first; `None`: to the URI's host.
    pub outbound_proxy: Option<SocketAddr>,
    /// Who dial-outs authenticate as when challenged.
    pub credentials: Option<SipUser>,
}

/// Where SIP over TLS listens, and the certificate it presents.
#[derive(Clone, Debug)]
pub struct SipTlsFiles {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl SipTlsFiles {
    fn resolve(listen: Option<SocketAddr>, cert: Option<PathBuf>, key: Option<PathBuf>) -> anyhow::Result<Option<SipTlsFiles>> {
        match (listen, cert, key) {
            (None, None, None) => Ok(None),
            (Some(listen), Some(cert), Some(key)) => Ok(Some(SipTlsFiles { listen, cert, key })),
            _ => anyhow::bail!("SIP over TLS needs all three of --sip-tls-listen, --sip-tls-cert and --sip-tls-key"),
        }
    }
}

/// A user who may call from anywhere with a password.
#[derive(Clone)]
pub struct SipUser {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for SipUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SipUser({}, password hidden)", self.name)
    }
}

impl SipSettings {
    fn resolve(
        listen: Option<String>,
        public_address: Option<String>,
        tls: Option<SipTlsFiles>,
        trusted_networks: Vec<IpNet>,
        users: Vec<String>,
        routes: Vec<RouteRule>,
        templates: HashMap<String, CompositionConfig>,
    ) -> anyhow::Result<SipSettings> {
        let listen = match listen.as_deref().map(str::trim) {
            None => Some(DEFAULT_SIP_LISTEN),
            Some("") => None,
            Some(text) => Some(text.parse().with_context(|| format!("--sip-listen {text:?} is not an address:port"))?),
        };
        let public_address = public_address.map(|a| a.trim().to_string()).filter(|a| !a.is_empty());
        let trusted_networks = if trusted_networks.is_empty() {
            let loopback_v4 = IpNet::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).expect("8 is a valid IPv4 prefix");
            vec![loopback_v4, IpNet::from(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST))]
        } else {
            trusted_networks
        };
        let users = users
            .iter()
            .map(|entry| match entry.split_once(':') {
                Some((name, password)) if !name.trim().is_empty() && !password.is_empty() => {
                    Ok(SipUser { name: name.trim().to_string(), password: password.to_string() })
                }
                _ => Err(anyhow::anyhow!("--sip-user takes NAME:PASSWORD, both non-empty")),
            })
            .collect::<anyhow::Result<_>>()?;
        for (name, template) in &templates {
            template.validate().with_context(|| format!("[sip_templates.{name}]"))?;
        }
        let routes = Rules::new(&routes, &templates).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(SipSettings { listen, public_address, tls, trusted_networks, users, routes, templates, outbound_proxy: None, credentials: None })
    }

    fn with_dial_out(mut self, proxy: Option<SocketAddr>, username: Option<String>, password: Option<String>) -> anyhow::Result<SipSettings> {
        self.outbound_proxy = proxy;
        self.credentials = match (username, password) {
            (Some(name), Some(password)) => Some(SipUser { name, password }),
            (None, None) => None,
            _ => anyhow::bail!("--sip-username and --sip-password go together"),
        };
        Ok(self)
    }
}

/// Who may call the API.
#[derive(Clone, Debug, Default)]
pub struct AccessConfig {
    /// Admin tokens; none means the API is open.
    pub api_tokens: Vec<String>,
    /// Signs per-composition tokens; `None`: a random secret per process.
    pub token_secret: Option<String>,
    pub insecure_no_auth: bool,
    pub metrics_public: bool,
}

/// What one node takes before it says no.
#[derive(Clone, Copy, Debug)]
pub struct NodeLimits {
    pub max_body_bytes: usize,
    pub max_compositions: usize,
    pub max_participants: usize,
    pub join_rate: f64,
    pub join_burst: u32,
    pub cpu_budget: Budget,
    pub costs: CostModel,
}

/// Why `serve` refuses its configuration.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeConfig {
    #[error(
        "refusing to serve the API on {0} without a token: anyone who reaches that address could run and \
         watch every composition. Set admin tokens with TUTTI_API_TOKENS=token1,token2 (or api_tokens = [\"...\"] \
         in the --config file), or pass --insecure-no-auth to serve it open on purpose"
    )]
    OpenOnNetwork(SocketAddr),
    #[error("an API token is shorter than {MIN_API_TOKEN_LEN} characters (TUTTI_API_TOKENS / api_tokens): it could be guessed")]
    ShortToken,
}

/// Fully resolved settings of `tutti serve`.
#[derive(Clone, Debug)]
pub struct Config {
    pub http: SocketAddr,
    pub rtp_ports: PortRange,
    pub public_ip: IpAddr,
    pub rtp_bind: IpAddr,
    pub srt_ports: PortRange,
    pub webrtc_udp: u16,
    pub jitter_buffer: Duration,
    pub stale_after: Duration,
    /// How long an RTMP participant whose publisher stopped waits for it.
    pub publisher_return_within: Duration,
    /// Overrides of the built-in profiles (see `media::profiles`).
    pub pipelines_dir: Option<PathBuf>,
    pub recordings_dir: PathBuf,
    pub hls_dir: PathBuf,
    pub branding_dir: PathBuf,
    pub rtmp_listen: SocketAddr,
    pub sip: SipSettings,
    /// Where events are POSTed, and the key that signs them.
    pub webhooks: WebhookConfig,
    pub rtmps_ca_file: Option<PathBuf>,
    pub rtp_source_check: SourceCheckMode,
    pub media_encryption: MediaEncryption,
    pub access: AccessConfig,
    pub limits: NodeLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(ServeArgs::default(), FileConfig::default()).expect("the defaults are valid")
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
        Config::resolve(args, file)
    }

    /// Secure by default: no open API beyond loopback unless asked for, no guessable token.
    pub fn check_access(&self) -> Result<(), UnsafeConfig> {
        if self.access.api_tokens.iter().any(|t| t.len() < MIN_API_TOKEN_LEN) {
            return Err(UnsafeConfig::ShortToken);
        }
        if self.access.api_tokens.is_empty() && !self.http.ip().is_loopback() && !self.access.insecure_no_auth {
            return Err(UnsafeConfig::OpenOnNetwork(self.http));
        }
        Ok(())
    }

    fn resolve(args: ServeArgs, file: FileConfig) -> anyhow::Result<Config> {
        let costs = cost_model(&args, &file);
        let webhook_urls = if args.webhook_urls.is_empty() { file.webhook_urls.unwrap_or_default() } else { args.webhook_urls };
        let webhooks = webhook_config(webhook_urls, args.webhook_secret.or(file.webhook_secret))?;
        Ok(Config {
            http: args.http.or(file.http).unwrap_or(DEFAULT_HTTP),
            rtp_ports: args.rtp_ports.or(file.rtp_ports).unwrap_or(DEFAULT_RTP_PORTS),
            public_ip: args.public_ip.or(file.public_ip).unwrap_or(DEFAULT_PUBLIC_IP),
            rtp_bind: args.rtp_bind.or(file.rtp_bind).unwrap_or(DEFAULT_RTP_BIND),
            srt_ports: args.srt_ports.or(file.srt_ports).unwrap_or(DEFAULT_SRT_PORTS),
            webrtc_udp: args.webrtc_udp.or(file.webrtc_udp).unwrap_or(crate::webrtc::DEFAULT_UDP_PORT),
            jitter_buffer: Duration::from_millis(u64::from(
                args.jitter_buffer_ms.or(file.jitter_buffer_ms).unwrap_or(DEFAULT_JITTER_BUFFER_MS),
            )),
            stale_after: Duration::from_secs(
                args.stale_after_secs.or(file.stale_after_secs).unwrap_or(DEFAULT_STALE_AFTER_SECS),
            ),
            publisher_return_within: Duration::from_secs(
                args.publisher_return_secs.or(file.publisher_return_secs).unwrap_or(DEFAULT_PUBLISHER_RETURN_SECS),
            ),
            pipelines_dir: args.pipelines.or(file.pipelines),
            recordings_dir: args
                .recordings
                .or(file.recordings)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_RECORDINGS_DIR)),
            hls_dir: args.hls_dir.or(file.hls_dir).unwrap_or_else(|| std::env::temp_dir().join("tutti-hls")),
            branding_dir: args.branding_dir.or(file.branding_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_BRANDING_DIR)),
            rtmp_listen: args.rtmp_listen.or(file.rtmp_listen).unwrap_or(DEFAULT_RTMP_LISTEN),
            sip: SipSettings::resolve(
                args.sip_listen.or(file.sip_listen),
                args.sip_public_address.or(file.sip_public_address),
                SipTlsFiles::resolve(
                    args.sip_tls_listen.or(file.sip_tls_listen),
                    args.sip_tls_cert.or(file.sip_tls_cert),
                    args.sip_tls_key.or(file.sip_tls_key),
                )?,
                if args.sip_trusted_networks.is_empty() { file.sip_trusted_networks.unwrap_or_default() } else { args.sip_trusted_networks },
                if args.sip_users.is_empty() { file.sip_users.unwrap_or_default() } else { args.sip_users },
                file.sip_routes.unwrap_or_default(),
                file.sip_templates.unwrap_or_default(),
            )?
            .with_dial_out(
                args.sip_outbound_proxy.or(file.sip_outbound_proxy),
                args.sip_username.or(file.sip_username),
                args.sip_password.or(file.sip_password),
            )?,
            webhooks,
            rtmps_ca_file: args.rtmps_ca_file.or(file.rtmps_ca_file),
            rtp_source_check: args.rtp_source_check.or(file.rtp_source_check).unwrap_or_default(),
            media_encryption: args.media_encryption.or(file.media_encryption).unwrap_or_default(),
            access: AccessConfig {
                // `TUTTI_API_TOKENS=` (empty) means none.
                api_tokens: Some(args.api_tokens)
                    .filter(|t| !t.is_empty())
                    .or(file.api_tokens)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect(),
                token_secret: args.token_secret.or(file.token_secret),
                insecure_no_auth: args.insecure_no_auth || file.insecure_no_auth.unwrap_or(false),
                metrics_public: args.metrics_public || file.metrics_public.unwrap_or(false),
            },
            limits: NodeLimits {
                max_body_bytes: args.max_body_bytes.or(file.max_body_bytes).unwrap_or(DEFAULT_MAX_BODY_BYTES),
                max_compositions: args.max_compositions.or(file.max_compositions).unwrap_or(DEFAULT_MAX_COMPOSITIONS),
                max_participants: args.max_participants.or(file.max_participants).unwrap_or(DEFAULT_MAX_PARTICIPANTS),
                join_rate: args.join_rate.or(file.join_rate).unwrap_or(DEFAULT_JOIN_RATE),
                join_burst: args.join_burst.or(file.join_burst).unwrap_or(DEFAULT_JOIN_BURST),
                cpu_budget: args.cpu_budget.or(file.cpu_budget).map(Budget::new).unwrap_or_else(default_budget),
                costs,
            },
        })
    }
}

/// Webhook URLs must be http(s) and come with a secret: an unsigned
/// webhook could be forged by anyone who can reach the receiver.
fn webhook_config(urls: Vec<String>, secret: Option<String>) -> anyhow::Result<WebhookConfig> {
    let urls = urls
        .iter()
        .filter(|u| !u.trim().is_empty())
        .map(|u| {
            let url = reqwest::Url::parse(u.trim()).with_context(|| format!("webhook URL {u:?} is not a URL"))?;
            anyhow::ensure!(matches!(url.scheme(), "http" | "https"), "webhook URL {u:?} must be http:// or https://");
            Ok(url)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let secret = secret.filter(|s| !s.is_empty());
    anyhow::ensure!(
        urls.is_empty() || secret.is_some(),
        "webhook URLs are set but no secret to sign them with: set --webhook-secret, TUTTI_WEBHOOK_SECRET or webhook_secret"
    );
    Ok(WebhookConfig { urls, secret: secret.unwrap_or_default() })
}

fn default_budget() -> Budget {
    Budget::share_of(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn cost_model(args: &ServeArgs, file: &FileConfig) -> CostModel {
    let defaults = CostModel::default();
    let pick = |flag: Option<Cores>, file: Option<Cores>, default: Cores| flag.or(file).unwrap_or(default);
    CostModel {
        composition_720p30: pick(args.cost_composition_720p30, file.cost_composition_720p30, defaults.composition_720p30),
        video_caller: pick(args.cost_video_caller, file.cost_video_caller, defaults.video_caller),
        audio_caller: pick(args.cost_audio_caller, file.cost_audio_caller, defaults.audio_caller),
        output: pick(args.cost_output, file.cost_output, defaults.output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_trusts_loopback_until_told_which_networks_to_trust() {
        let default = SipSettings::resolve(None, None, None, vec![], vec![], vec![], HashMap::new()).unwrap();
        let trusts = |s: &SipSettings, ip: &str| s.trusted_networks.iter().any(|n| n.contains(&ip.parse::<IpAddr>().unwrap()));
        assert!(trusts(&default, "127.0.0.1") && trusts(&default, "127.9.9.9") && trusts(&default, "::1"));
        assert!(!trusts(&default, "192.0.2.1"));
        let trunk = SipSettings::resolve(None, None, None, vec!["192.0.2.0/24".parse().unwrap()], vec!["alice:a:b".into()], vec![], HashMap::new()).unwrap();
        assert!(trusts(&trunk, "192.0.2.1") && !trusts(&trunk, "127.0.0.1"));
        assert_eq!((trunk.users[0].name.as_str(), trunk.users[0].password.as_str()), ("alice", "a:b"));
        assert!(!format!("{trunk:?}").contains("a:b"), "passwords stay out of logs");
        assert!(SipSettings::resolve(None, None, None, vec![], vec!["nopassword".into()], vec![], HashMap::new()).is_err());
        assert_eq!(SipSettings::resolve(Some(String::new()), None, None, vec![], vec![], vec![], HashMap::new()).unwrap().listen, None);
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let file: FileConfig = toml::from_str(
            "http = \"0.0.0.0:9000\"\nrtp_ports = \"30000-30099\"\njitter_buffer_ms = 80\n",
        )
        .unwrap();
        let args = ServeArgs { jitter_buffer_ms: Some(60), ..Default::default() };
        let c = Config::resolve(args, file).unwrap();
        assert_eq!(c.http, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(c.rtp_ports, PortRange { first: 30000, last: 30099 });
        assert_eq!(c.jitter_buffer, Duration::from_millis(60));
        assert_eq!(c.stale_after, Duration::from_secs(DEFAULT_STALE_AFTER_SECS));
        assert_eq!(c.public_ip, DEFAULT_PUBLIC_IP);
    }

    #[test]
    fn webhooks_need_a_secret_and_an_http_url() {
        let with = |urls: &[&str], secret: Option<&str>| {
            webhook_config(urls.iter().map(|u| u.to_string()).collect(), secret.map(str::to_owned))
        };
        assert!(with(&["http://127.0.0.1:9/hook"], None).is_err());
        assert!(with(&["ftp://example.com/"], Some("k")).is_err());
        assert!(with(&["not a url"], Some("k")).is_err());
        let ok = with(&["https://example.com/hook", ""], Some("k")).unwrap();
        assert_eq!(ok.urls.len(), 1);
        assert!(with(&[], None).unwrap().urls.is_empty());
    }

    #[test]
    fn the_rtmps_ca_file_comes_from_the_flag_or_the_file() {
        let file: FileConfig = toml::from_str("rtmps_ca_file = \"/etc/tutti/origin-ca.pem\"\n").unwrap();
        assert_eq!(
            Config::resolve(ServeArgs::default(), file).unwrap().rtmps_ca_file,
            Some(PathBuf::from("/etc/tutti/origin-ca.pem"))
        );
        let file: FileConfig = toml::from_str("rtmps_ca_file = \"/etc/tutti/origin-ca.pem\"\n").unwrap();
        let args = ServeArgs { rtmps_ca_file: Some(PathBuf::from("ca.pem")), ..Default::default() };
        assert_eq!(Config::resolve(args, file).unwrap().rtmps_ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(Config::default().rtmps_ca_file, None);
    }

    #[test]
    fn the_branding_dir_comes_from_the_flag_then_the_file_then_assets() {
        let file: FileConfig = toml::from_str("branding_dir = \"/srv/brand\"\n").unwrap();
        assert_eq!(Config::resolve(ServeArgs::default(), file).unwrap().branding_dir, PathBuf::from("/srv/brand"));
        let file: FileConfig = toml::from_str("branding_dir = \"/srv/brand\"\n").unwrap();
        let args = ServeArgs { branding_dir: Some(PathBuf::from("logos")), ..Default::default() };
        assert_eq!(Config::resolve(args, file).unwrap().branding_dir, PathBuf::from("logos"));
        assert_eq!(Config::default().branding_dir, PathBuf::from(DEFAULT_BRANDING_DIR));
    }

    #[test]
    fn rtp_source_check_comes_from_flag_then_file_then_latch() {
        let file: FileConfig = toml::from_str("rtp_source_check = \"strict\"\n").unwrap();
        assert_eq!(Config::resolve(ServeArgs::default(), file).unwrap().rtp_source_check, SourceCheckMode::Strict);
        let file: FileConfig = toml::from_str("rtp_source_check = \"strict\"\n").unwrap();
        let args = ServeArgs { rtp_source_check: Some(SourceCheckMode::Off), ..Default::default() };
        assert_eq!(Config::resolve(args, file).unwrap().rtp_source_check, SourceCheckMode::Off);
        assert_eq!(Config::default().rtp_source_check, SourceCheckMode::Latch);
        assert!(toml::from_str::<FileConfig>("rtp_source_check = \"loose\"").is_err());
    }

    #[test]
    fn media_encryption_comes_from_flag_then_file_then_optional() {
        let file: FileConfig = toml::from_str("media_encryption = \"required\"\n").unwrap();
        assert_eq!(Config::resolve(ServeArgs::default(), file).unwrap().media_encryption, MediaEncryption::Required);
        let file: FileConfig = toml::from_str("media_encryption = \"required\"\n").unwrap();
        let args = ServeArgs { media_encryption: Some(MediaEncryption::Off), ..Default::default() };
        assert_eq!(Config::resolve(args, file).unwrap().media_encryption, MediaEncryption::Off);
        assert_eq!(Config::default().media_encryption, MediaEncryption::Optional);
        assert!(toml::from_str::<FileConfig>("media_encryption = \"mandatory\"").is_err());
    }

    #[test]
    fn tokens_and_limits_come_from_the_file_unless_flags_say_otherwise() {
        let file: FileConfig = toml::from_str(
            "api_tokens = [\"0123456789abcdef\"]\nmetrics_public = true\ncpu_budget = 3.5\ncost_output = 0.2\n",
        )
        .unwrap();
        let args = ServeArgs { cpu_budget: Some(0.0), ..Default::default() };
        let c = Config::resolve(args, file).unwrap();
        assert_eq!(c.access.api_tokens, ["0123456789abcdef"]);
        assert!(c.access.metrics_public);
        assert_eq!(c.limits.cpu_budget.cores(), None, "0 on the command line turns admission off");
        assert_eq!(c.limits.costs.output, 0.2);
        assert_eq!(c.limits.costs.video_caller, CostModel::default().video_caller);
    }

    #[test]
    fn an_open_api_is_refused_beyond_loopback() {
        let on = |http: &str, tokens: &[&str], insecure: bool| {
            let mut c = Config { http: http.parse().unwrap(), ..Config::default() };
            c.access.api_tokens = tokens.iter().map(|t| t.to_string()).collect();
            c.access.insecure_no_auth = insecure;
            c.check_access()
        };
        assert!(on("127.0.0.1:8080", &[], false).is_ok(), "the demo on loopback stays open");
        assert!(on("[::1]:8080", &[], false).is_ok());
        let refused = on("0.0.0.0:8080", &[], false).unwrap_err().to_string();
        assert!(refused.contains("TUTTI_API_TOKENS") && refused.contains("--insecure-no-auth"), "{refused}");
        assert!(on("0.0.0.0:8080", &[], true).is_ok());
        assert!(on("0.0.0.0:8080", &["0123456789abcdef"], false).is_ok());
        assert!(matches!(on("127.0.0.1:8080", &["short"], false), Err(UnsafeConfig::ShortToken)));
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        assert!(toml::from_str::<FileConfig>("htp = \"x\"").is_err());
    }
}
