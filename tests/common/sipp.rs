//! SIPp (Debian's `sip-tester`) playing one call of a scenario in `tests/sipp/` against Tutti.
//!
//! A scenario marks its steps with a `gettimeofday` action and a log line
//! `NAME [$s] [$us]` (`-trace_logs`), so a test can judge what reached its
//! media ports against the wall-clock time of each SIP step. Every message
//! sent and received is kept (`-trace_msg`) for the failure report.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, ensure};

use super::net::free_sip_port;
use super::process::run_bounded;
use super::server::Server;

pub const INSTALL_HINT: &str = "SIPp is missing: apt-get install sip-tester (scripts/install-deps.sh)";

/// A SIPp run in progress (UAC: it calls Tutti).
pub struct Sipp {
    run: JoinHandle<Result<SippRun>>,
}

/// What a finished run did.
pub struct SippRun {
    /// Each step the scenario logged, with when it happened.
    pub steps: Vec<(String, SystemTime)>,
    /// Every SIP message sent and received, as SIPp traced them.
    pub messages: String,
}

impl Sipp {
    /// Calls `sip:{service}@` Tutti with `scenario`, each `-key` set, and
    /// `phase` as the scenario's default pause. Fails if SIPp's call fails
    /// (an unexpected status, a failed `check_it`) or outlasts `timeout`.
    pub fn call(server: &Server, scenario: &str, service: &str, keys: &[(&str, String)], phase: Duration, timeout: Duration) -> Result<Sipp> {
        let remote = format!("127.0.0.1:{}", server.sip_port);
        Self::run(scenario, &["-s", service, &remote], free_sip_port()?, keys, phase, timeout)
    }

    /// Waits on `port` for one call (Tutti dialling out) and plays `scenario` as its UAS.
    pub fn answer(scenario: &str, port: u16, keys: &[(&str, String)], phase: Duration, timeout: Duration) -> Result<Sipp> {
        Self::run(scenario, &[], port, keys, phase, timeout)
    }

    fn run(scenario: &str, args: &[&str], local_port: u16, keys: &[(&str, String)], phase: Duration, timeout: Duration) -> Result<Sipp> {
        let dir = tempfile::Builder::new().prefix("sipp-").tempdir()?;
        let mut cmd = Command::new("sipp");
        cmd.current_dir(dir.path())
            .arg("-sf")
            .arg(scenario_path(scenario))
            .args(["-m", "1", "-i", "127.0.0.1", "-p", &local_port.to_string()])
            .args(["-d", &phase.as_millis().to_string()])
            .args(["-trace_logs", "-log_file", "steps.log", "-trace_msg", "-message_file", "messages.log"])
            .args(["-trace_err", "-error_file", "errors.log", "-nostdin"]);
        for (key, value) in keys {
            cmd.args(["-key", key, value]);
        }
        cmd.args(args);
        let run = thread::spawn(move || {
            let output = run_bounded(cmd, timeout).context(INSTALL_HINT)?;
            let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
            let messages = read("messages.log");
            ensure!(
                output.status.success(),
                "SIPp failed ({}): {}\n{}\nerrors: {}\nmessages:\n{messages}",
                output.status,
                String::from_utf8_lossy(&output.stdout).lines().rev().take(30).collect::<Vec<_>>().join("\n"),
                String::from_utf8_lossy(&output.stderr),
                read("errors.log"),
            );
            Ok(SippRun { steps: parse_steps(&read("steps.log"))?, messages })
        });
        Ok(Sipp { run })
    }

    /// Waits for the call to end.
    pub fn finish(self) -> Result<SippRun> {
        self.run.join().map_err(|_| anyhow!("the SIPp thread panicked"))?
    }
}

impl SippRun {
    /// When the scenario logged step `name`.
    pub fn at(&self, name: &str) -> Result<SystemTime> {
        self.steps.iter().find(|(n, _)| n == name).map(|(_, t)| *t).ok_or_else(|| anyhow!("SIPp logged no step {name:?}: {:?}", self.steps))
    }
}

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp").join(name)
}

/// `NAME SECONDS MICROSECONDS` lines (SIPp prints its variables as `1796079094.000000`).
fn parse_steps(log: &str) -> Result<Vec<(String, SystemTime)>> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [name, secs, micros] = parts[..] else { return Err(anyhow!("a SIPp step line that is not NAME S US: {line:?}")) };
            let secs: f64 = secs.parse().with_context(|| line.to_string())?;
            let micros: f64 = micros.parse().with_context(|| line.to_string())?;
            Ok((name.to_string(), UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_micros(micros as u64)))
        })
        .collect()
}
