//! SIPp (Debian's `sip-tester`) playing one call of a scenario in `tests/sipp/` against Tutti,
//! as its caller or (dial-out) its callee. It sends and expects exactly the messages of the
//! scenario and fails the call on anything else. A scenario's `{{NAME}}` placeholders are
//! filled here (bodies, statuses, whole steps: what `-key` cannot carry), `[keyword]`s and
//! `-key`s are SIPp's own.
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

use super::net::{free_sip_port, free_udp_port};
use super::process::run_bounded;
use super::server::Server;

/// A plain-RTP offer of PCMU whose media go to `port` on loopback.
pub fn pcmu_offer(port: u16) -> String {
    format!(
        "v=0\r\no=sipp 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
}

/// Builds the middle of `call.xml`: in-dialog requests with rising CSeqs.
#[derive(Default)]
pub struct Dialog {
    steps: Vec<String>,
    cseq: u32,
}

impl Dialog {
    pub fn new() -> Dialog {
        Dialog { steps: Vec::new(), cseq: 1 }
    }

    pub fn pause(mut self, millis: u64) -> Dialog {
        self.steps.push(format!("  <pause milliseconds=\"{millis}\"/>"));
        self
    }

    /// OPTIONS inside the dialog (an SBC's keep-alive): 200 expected.
    pub fn options(mut self) -> Dialog {
        let request = self.request("OPTIONS", "Content-Length: 0\n");
        self.steps.push(format!("{request}\n  <recv response=\"200\"/>"));
        self
    }

    /// An INFO with `body` as `content_type` (a DTMF key, a picture_fast_update): 200 expected.
    pub fn info(mut self, content_type: &str, body: &str) -> Dialog {
        let request = self.request("INFO", &format!("Content-Type: {content_type}\nContent-Length: [len]\n\n{body}"));
        self.steps.push(format!("{request}\n  <recv response=\"200\"/>"));
        self
    }

    /// A re-INVITE repeating `offer` (a session refresh): 200 with an answer, then ACK.
    pub fn refresh(mut self, offer: &str) -> Dialog {
        let body = format!("Content-Type: application/sdp\nContent-Length: [len]\n\n{offer}");
        let request = self.request("INVITE", &body);
        let ack = self.in_dialog("ACK", self.cseq, "Content-Length: 0\n");
        self.steps.push(format!(
            "{request}\n  <recv response=\"100\" optional=\"true\"/>\n  <recv response=\"200\">\n    <action>\n      \
             <ereg regexp=\"m=audio [1-9][0-9]* RTP/AVP 0\" search_in=\"body\" check_it=\"true\" assign_to=\"answer\"/>\n    \
             </action>\n  </recv>\n{ack}"
        ));
        self
    }

    /// SIPp hangs up.
    pub fn hang_up(mut self) -> String {
        let request = self.request("BYE", "Content-Length: 0\n");
        self.steps.push(format!("{request}\n  <recv response=\"200\"/>"));
        self.steps.join("\n")
    }

    /// Tutti hangs up: SIPp waits for its BYE (`timeout_ms` at most) and answers 200.
    pub fn await_bye(mut self, timeout_ms: u64) -> String {
        self.steps.push(format!(
            "  <recv request=\"BYE\" timeout=\"{timeout_ms}\"/>\n  <send>\n    <![CDATA[\n      SIP/2.0 200 OK\n      \
             [last_Via:]\n      [last_From:]\n      [last_To:]\n      [last_Call-ID:]\n      [last_CSeq:]\n      \
             Content-Length: 0\n\n    ]]>\n  </send>"
        ));
        self.steps.join("\n")
    }

    fn request(&mut self, method: &str, rest: &str) -> String {
        self.cseq += 1;
        let message = self.in_dialog(method, self.cseq, rest);
        message.replacen("<send>", "<send retrans=\"500\">", 1)
    }

    fn in_dialog(&self, method: &str, cseq: u32, rest: &str) -> String {
        format!(
            "  <send>\n    <![CDATA[\n      {method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n      \
             Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n      \
             From: \"SIPp Room\" <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n      \
             To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\n      Call-ID: [call_id]\n      \
             CSeq: {cseq} {method}\n      Contact: sip:sipp@[local_ip]:[local_port]\n      Max-Forwards: 70\n{rest}\n    ]]>\n  </send>"
        )
    }
}

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
        Self::run(scenario, &[], &["-s", service, &remote], free_sip_port()?, keys, phase, timeout)
    }

    /// Waits on `port` for one call (Tutti dialling out) and plays `scenario` as its UAS.
    pub fn answer(scenario: &str, port: u16, keys: &[(&str, String)], phase: Duration, timeout: Duration) -> Result<Sipp> {
        Self::run(scenario, &[], &[], port, keys, phase, timeout)
    }

    /// Calls `sip:{service}@127.0.0.1:{sip_port}` with `scenario`, its placeholders filled,
    /// over TCP if `tcp` (else UDP); the call must end within [`PLACED_CALL_TIMEOUT`].
    pub fn place(scenario: &str, fills: &[(&str, &str)], service: &str, sip_port: u16, tcp: bool) -> Result<Sipp> {
        let remote = format!("127.0.0.1:{sip_port}");
        let args = ["-s", service, &remote, "-t", if tcp { "t1" } else { "u1" }];
        Self::run(scenario, fills, &args, free_sip_port()?, &[], Duration::ZERO, PLACED_CALL_TIMEOUT)
    }

    /// [`Sipp::place`], then waits for the call to end.
    pub fn play(scenario: &str, fills: &[(&str, &str)], service: &str, sip_port: u16, tcp: bool) -> Result<SippRun> {
        Self::place(scenario, fills, service, sip_port, tcp)?.finish()
    }

    fn run(
        scenario: &str,
        fills: &[(&str, &str)],
        args: &[&str],
        local_port: u16,
        keys: &[(&str, String)],
        phase: Duration,
        timeout: Duration,
    ) -> Result<Sipp> {
        let dir = tempfile::Builder::new().prefix("sipp-").tempdir()?;
        let scenario = filled(scenario, fills, dir.path())?;
        let mut cmd = Command::new("sipp");
        cmd.current_dir(dir.path())
            .arg("-sf")
            .arg(scenario)
            // A media port of its own, so that runs in parallel never collide.
            .args(["-mp", &free_udp_port()?.to_string()])
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

/// How long a call placed with [`Sipp::place`] may last.
const PLACED_CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp").join(name)
}

/// The scenario to run: the file itself, or a copy in `dir` with its `{{NAME}}`s filled.
fn filled(scenario: &str, fills: &[(&str, &str)], dir: &Path) -> Result<PathBuf> {
    let path = scenario_path(scenario);
    if fills.is_empty() {
        return Ok(path);
    }
    let mut text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for (name, value) in fills {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(start) = text.find("{{") {
        return Err(anyhow!("scenario {scenario} still has a placeholder at {}", &text[start..(start + 20).min(text.len())]));
    }
    let copy = dir.join(scenario);
    std::fs::write(&copy, text)?;
    Ok(copy)
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
