//! The server under test, started as a child process, and its REST API.

use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail, ensure};
use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION};
use tempfile::TempDir;

use super::net::{RtpPortBlock, free_sip_port, free_tcp_port, server_rtp_range};
use super::process::{ChildProcess, wait_until};

/// Ports given to each server for RTP/RTCP.
const RTP_PORTS: u16 = 200;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// SIGTERM grace period before SIGKILL on drop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const HEALTH_POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// The binary under test. TUTTI_TEST_BINARY runs the suite against another
/// build (a release binary, or an older one to show that a test catches its bug).
pub fn tutti_binary() -> std::ffi::OsString {
    std::env::var_os("TUTTI_TEST_BINARY").unwrap_or_else(|| env!("CARGO_BIN_EXE_tutti").into())
}

/// The server's stdout and stderr, in its temp dir.
const LOG_FILE: &str = "server.log";
/// The working directory [`Server::start_in_empty_dir`] gives, in the temp dir.
const EMPTY_WORKING_DIR: &str = "cwd";

/// A running `tutti serve`; dropped, it gets SIGTERM, then SIGKILL after a bounded wait.
/// If the test is panicking its log is printed and its temp dir kept.
pub struct Server {
    /// e.g. `http://127.0.0.1:41234`
    pub base_url: String,
    /// The inclusive UDP port range passed as `--rtp-ports`, this server's
    /// until it is dropped.
    pub rtp_ports: RtpPortBlock,
    /// Where its SIP user agent listens on 127.0.0.1, UDP and TCP (unless a
    /// test passed its own `--sip-listen`).
    pub sip_port: u16,
    http: Client,
    /// Sent as `Authorization: Bearer` by every request made through the helpers.
    token: Option<String>,
    process: ChildProcess,
    dir: Option<TempDir>,
}

/// How to start a server beyond the standard command line.
#[derive(Default)]
pub struct ServerOptions<'a> {
    /// Appended to the standard command line.
    pub args: &'a [&'a str],
    /// Set in the server's environment.
    pub env: &'a [(&'a str, &'a str)],
    /// The address the API binds to, on the usual free port [default: 127.0.0.1]; tests
    /// still reach it on 127.0.0.1.
    pub http_host: Option<&'a str>,
    /// The token the helpers send (an admin token of `env` or `args`).
    pub token: Option<&'a str>,
    /// Run in an empty directory of its own (see [`Server::working_dir`]).
    pub empty_working_dir: bool,
}

/// A finished HTTP exchange.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("response body is not JSON: {}", self.body))
    }
}

/// A participant the server accepted.
#[derive(Debug, Clone)]
pub struct Participant {
    /// The `Location` header, usable with `Server::delete`.
    pub location: String,
    /// The SDP answer.
    pub answer: String,
    /// When the offer was sent: what a join's delay counts from.
    pub posted_at: SystemTime,
}

/// The value in Prometheus text `metrics` of the sample of `name` whose
/// labels include all of `labels`.
pub fn metric_sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        (metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))).then(|| value.parse().ok())?
    })
}

/// Runs `test` against a server started with `extra_args`; a failure panics
/// with the server's log, which says what the media did.
pub fn with_server(extra_args: &[&str], test: impl FnOnce(&Server) -> Result<()>) {
    let server = Server::start_with(extra_args).unwrap();
    if let Err(e) = test(&server) {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

impl Server {
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// Starts the server with `extra_args` appended to the standard command line,
    /// in the test's working directory (the checkout).
    pub fn start_with(extra_args: &[&str]) -> Result<Self> {
        Self::start_with_options(ServerOptions { args: extra_args, ..ServerOptions::default() })
    }

    /// Starts the server with its working directory an empty directory of
    /// its own (see [`Server::working_dir`]): nothing of the checkout in reach.
    pub fn start_in_empty_dir(extra_args: &[&str]) -> Result<Self> {
        Self::start_with_options(ServerOptions { args: extra_args, empty_working_dir: true, ..ServerOptions::default() })
    }

    pub fn start_with_options(options: ServerOptions) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("tutti-server-").tempdir()?;
        let http_port = free_tcp_port()?;
        let rtp_ports = server_rtp_range(RTP_PORTS)?;
        let sip_port = free_sip_port()?;
        let mut cmd = Command::new(tutti_binary());
        let http_host = options.http_host.unwrap_or("127.0.0.1");
        cmd.args(["serve", "--http", &format!("{http_host}:{http_port}")])
            .args(["--rtp-ports", &format!("{}-{}", rtp_ports.first, rtp_ports.last)])
            .args(["--public-ip", "127.0.0.1"])
            // The embedded RTMP server on a port of its own (each composition shows its play URL).
            .args(["--rtmp-listen", "127.0.0.1:0"])
            // WebRTC's one UDP socket on a free port too (answers announce it).
            .args(if options.args.contains(&"--webrtc-udp") { vec![] } else { vec!["--webrtc-udp", "0"] })
            .args(if options.args.contains(&"--sip-listen") { vec![] } else { vec!["--sip-listen".to_string(), format!("127.0.0.1:{sip_port}")] })
            .arg("--hls-dir")
            .arg(dir.path().join("hls"))
            .arg("--recordings")
            .arg(dir.path().join("recordings"))
            .args(options.args)
            // The tests' own tokens, never the environment's.
            .env_remove("TUTTI_API_TOKENS")
            .envs(options.env.iter().copied());
        if options.empty_working_dir {
            let cwd = dir.path().join(EMPTY_WORKING_DIR);
            std::fs::create_dir(&cwd)?;
            cmd.current_dir(cwd);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let process = ChildProcess::spawn("tutti", cmd, &dir.path().join(LOG_FILE))?;
        let http = Client::builder().timeout(HTTP_TIMEOUT).build()?;
        let mut server = Server {
            base_url: format!("http://127.0.0.1:{http_port}"),
            rtp_ports,
            sip_port,
            http,
            token: options.token.map(str::to_owned),
            process,
            dir: Some(dir),
        };
        let healthz = server.url("/healthz");
        let http = server.http.clone();
        let process = &mut server.process;
        wait_until("GET /healthz to answer 200", STARTUP_TIMEOUT, || {
            if let Some(status) = process.exit_status() {
                bail!("tutti exited during startup ({status})");
            }
            let response = http.get(&healthz).timeout(HEALTH_POLL_TIMEOUT).send();
            Ok(response.is_ok_and(|r| r.status().as_u16() == 200))
        })
        .map_err(|e| anyhow!("{e:#}\n{}", server.logs()))?;
        Ok(server)
    }

    /// The working directory of the running process, as the kernel reports it.
    pub fn working_dir(&self) -> Result<std::path::PathBuf> {
        Ok(std::fs::read_link(format!("/proc/{}/cwd", self.pid()))?)
    }

    /// Everything the server has written to stdout and stderr so far, as bytes.
    pub fn full_log(&self) -> Result<Vec<u8>> {
        let dir = self.dir.as_ref().expect("the temp dir lives as long as the server");
        Ok(std::fs::read(dir.path().join(LOG_FILE))?)
    }

    /// Where `record` outputs of this server write.
    pub fn recordings_dir(&self) -> std::path::PathBuf {
        self.dir.as_ref().expect("the temp dir lives as long as the server").path().join("recordings")
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// What the server holds now (file descriptors, threads, memory).
    pub fn footprint(&self) -> Result<super::process::Footprint> {
        super::process::Footprint::of(self.pid())
    }

    /// Its RTP/RTCP ports that some socket still has bound.
    pub fn bound_rtp_ports(&self) -> Vec<u16> {
        (self.rtp_ports.first..=self.rtp_ports.last).filter(|&port| super::net::udp_port_bound(port)).collect()
    }

    /// SIGKILL: no chance to finalize anything.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM and the exit status, within a bounded wait.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.process.stop("TERM", SHUTDOWN_GRACE)
    }

    /// `path` ("/v1/...") or an absolute URL (as a Location header may be) made absolute.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") { path.to_owned() } else { format!("{}{path}", self.base_url) }
    }

    /// The tail of the server's stdout+stderr.
    pub fn logs(&self) -> String {
        self.process.log_tail()
    }

    /// A request to `path` with the server's token, if it has one.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.anonymous(method, path);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// A request to `path` without any token.
    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    pub fn get(&self, path: &str) -> Result<HttpResponse> {
        self.send(self.request(Method::GET, path))
    }

    pub fn delete(&self, path: &str) -> Result<HttpResponse> {
        self.send(self.request(Method::DELETE, path))
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<HttpResponse> {
        self.send(self.request(Method::POST, path).json(body))
    }

    pub fn put_json(&self, path: &str, body: &serde_json::Value) -> Result<HttpResponse> {
        self.send(self.request(Method::PUT, path).json(body))
    }

    pub fn patch_json(&self, path: &str, body: &serde_json::Value) -> Result<HttpResponse> {
        self.send(self.request(Method::PATCH, path).json(body))
    }

    pub fn post_sdp(&self, path: &str, sdp: &str) -> Result<HttpResponse> {
        self.send(self.request(Method::POST, path).header(CONTENT_TYPE, "application/sdp").body(sdp.to_owned()))
    }

    /// `POST /v1/compositions`, expecting 201; returns the new composition's id.
    pub fn create_composition(&self, body: &serde_json::Value) -> Result<String> {
        let response = self.post_json("/v1/compositions", body)?;
        ensure!(response.status == 201, "creating a composition: {response:?}\n{}", self.logs());
        let id = &response.json()?["id"];
        Ok(id.as_str().map(str::to_owned).unwrap_or_else(|| id.to_string()))
    }

    /// `POST /v1/compositions/{id}/participants` with `offer`, expecting 201 + Location.
    pub fn add_participant(&self, composition_id: &str, offer: &str) -> Result<Participant> {
        let posted_at = SystemTime::now();
        let response = self.post_sdp(&format!("/v1/compositions/{composition_id}/participants"), offer)?;
        ensure!(response.status == 201, "adding a participant: {response:?}\n{}", self.logs());
        let location = response.header(LOCATION.as_str()).context("201 without a Location header")?.to_owned();
        Ok(Participant { location, answer: response.body, posted_at })
    }

    /// `POST /v1/compositions/{id}/participants` with `{"name", "sdp"}`, expecting 201 +
    /// Location; the answer is the JSON body's `sdp`.
    pub fn add_named_participant(&self, composition_id: &str, name: &str, offer: &str) -> Result<Participant> {
        let path = format!("/v1/compositions/{composition_id}/participants");
        let posted_at = SystemTime::now();
        let response = self.post_json(&path, &serde_json::json!({"name": name, "sdp": offer}))?;
        ensure!(response.status == 201, "adding participant {name}: {response:?}\n{}", self.logs());
        let location = response.header(LOCATION.as_str()).context("201 without a Location header")?.to_owned();
        let answer = response.json()?["sdp"].as_str().context("no sdp in the answer")?.to_owned();
        Ok(Participant { location, answer, posted_at })
    }

    /// A GET whose body is binary (an HLS segment, say).
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let response = self.request(Method::GET, path).send()?;
        anyhow::ensure!(response.status().is_success(), "GET {path}: {}", response.status());
        Ok(response.bytes()?.to_vec())
    }

    pub fn send(&self, request: RequestBuilder) -> Result<HttpResponse> {
        let response = request.send()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Ok(HttpResponse { status, headers, body: response.text()? })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let status = self.process.stop("TERM", SHUTDOWN_GRACE);
        if std::thread::panicking() {
            let kept = self.dir.take().map(TempDir::keep);
            eprintln!("tutti exited with {status}; files kept in {kept:?}\n{}", self.logs());
        }
    }
}
