//! A headless Chromium driven over WebDriver (chromedriver), for tests that judge a page
//! by its DOM or its media.
//!
//! ```text
//!   test ──WebDriver (HTTP+JSON)──▶ chromedriver ──▶ headless Chromium
//! ```

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Started by the test, so the browser never reaches beyond loopback or phones home.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox", // the sandbox cannot run as root, as CI containers do
    "--disable-gpu",
    "--disable-dev-shm-usage", // containers have a small /dev/shm
    "--no-proxy-server",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--window-size=1280,900",
    // No name resolves: Chromium still looks up update and search hosts at start,
    // and where the nameserver cannot be reached (a loopback-only namespace) each
    // lookup waited out the resolver's 5 s timeouts: 13 s before the page loaded.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
];
const DRIVER_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds each WebDriver request; the first, which starts Chromium, is the slowest.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A headless Chromium session behind a chromedriver on a free loopback port. Dropped, it
/// closes the session and kills chromedriver's process group, which holds Chromium too.
pub struct Browser {
    driver: Child,
    /// e.g. `http://127.0.0.1:9515/session/{id}`, once the session exists.
    session: Option<String>,
    http: Client,
    /// The Chromium profile, scratch files and chromedriver's log.
    dir: Option<TempDir>,
}

impl Browser {
    pub fn start() -> Result<Self> {
        Browser::start_with_args(&[])
    }

    /// A browser with Chromium flags beyond the usual ones, e.g. fake media devices.
    pub fn start_with_args(extra_args: &[String]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("tutti-browser-").tempdir()?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let log = File::create(dir.path().join("chromedriver.log"))?;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting chromedriver (scripts/install-deps.sh installs chromium and chromium-driver)")?;
        let http = Client::builder().no_proxy().timeout(COMMAND_TIMEOUT).build()?;
        // From here on, Drop cleans up whatever fails.
        let mut browser = Browser {
            driver,
            session: None,
            http,
            dir: Some(dir),
        };
        let base = format!("http://127.0.0.1:{port}");

        let deadline = Instant::now() + DRIVER_READY_TIMEOUT;
        loop {
            if let Some(status) = browser.driver.try_wait()? {
                bail!("chromedriver exited ({status})\n{}", browser.logs());
            }
            let status = browser
                .http
                .get(format!("{base}/status"))
                .send()
                .and_then(|r| r.json::<Value>());
            if status.is_ok_and(|s| s["value"]["ready"] == true) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "chromedriver not ready after {DRIVER_READY_TIMEOUT:?}\n{}",
                browser.logs()
            );
            thread::sleep(POLL_INTERVAL);
        }

        let profile = browser.dir.as_ref().expect("kept until drop").path().join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.extend_from_slice(extra_args);
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let session = browser.request(reqwest::Method::POST, &format!("{base}/session"), &capabilities)?;
        let id = session["sessionId"].as_str().context("a WebDriver session id")?;
        browser.session = Some(format!("{base}/session/{id}"));
        Ok(browser)
    }

    pub fn open(&self, url: &str) -> Result<()> {
        self.command("/url", &json!({ "url": url }))?;
        Ok(())
    }

    /// Runs `script` (a function body) in the page with `arguments[0] = arg`.
    pub fn execute(&self, script: &str, arg: &str) -> Result<Value> {
        self.command("/execute/sync", &json!({ "script": script, "args": [arg] }))
    }

    /// Runs `script` (a function body whose last argument is the callback
    /// to call with its result) with `arguments[0] = arg`, and waits for it.
    #[allow(dead_code)] // the webrtc_browser binary's
    pub fn execute_async(&self, script: &str, arg: &str) -> Result<Value> {
        self.command("/execute/async", &json!({ "script": script, "args": [arg] }))
    }

    /// Runs `script` until `done` accepts its result, which is returned; after `timeout` the
    /// error shows the last result and the browser's console.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        arg: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.execute(script, arg)?;
            if done(&value) {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; the page shows {value}\n{}",
                    self.console()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The page's console messages and errors (chromedriver's log endpoint).
    pub fn console(&self) -> String {
        match self.command("/se/log", &json!({"type": "browser"})) {
            Ok(Value::Array(entries)) => {
                let lines: Vec<String> = entries
                    .iter()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect();
                format!("----- browser console -----\n{}", lines.join("\n"))
            }
            other => format!("<no browser console: {other:?}>"),
        }
    }

    /// A POST to the session, e.g. `/url`.
    fn command(&self, path: &str, body: &Value) -> Result<Value> {
        let session = self
            .session
            .as_deref()
            .expect("commands are sent once the session exists");
        self.request(reqwest::Method::POST, &format!("{session}{path}"), body)
    }

    fn request(&self, method: reqwest::Method, url: &str, body: &Value) -> Result<Value> {
        let response = self
            .http
            .request(method, url)
            .json(body)
            .send()
            .with_context(|| format!("WebDriver {url}"))?;
        let status = response.status();
        let mut body: Value = response
            .json()
            .with_context(|| format!("WebDriver {url}: {status} without JSON"))?;
        ensure!(status.is_success(), "WebDriver {url}: {status} {}", body["value"]);
        Ok(body["value"].take())
    }

    /// The end of chromedriver's log.
    fn logs(&self) -> String {
        let log = self.dir.as_ref().map(|d| d.path().join("chromedriver.log"));
        let text = log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default();
        let start = (text.len().saturating_sub(8 * 1024)..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("----- chromedriver ({log:?}) -----\n{}", &text[start..])
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = &self.session {
            // Lets chromedriver close Chromium cleanly; the kill below covers a hung one.
            let _ = self.http.delete(session).timeout(SHUTDOWN_TIMEOUT).send();
        }
        // Killing chromedriver alone would orphan Chromium; the group (led by chromedriver,
        // whose pid is ours until we reap it) holds both.
        if let Ok(None) = self.driver.try_wait() {
            let group = format!("-{}", self.driver.id());
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &group])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.driver.wait();
        if thread::panicking() {
            let logs = self.logs();
            let kept = self.dir.take().map(TempDir::keep);
            eprintln!("browser files kept in {kept:?}\n{logs}");
        }
    }
}
