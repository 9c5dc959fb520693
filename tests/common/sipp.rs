//! SIPp (Debian's `sip-tester`) as the SIP peer of call-flow tests: it sends
//! and expects exactly the messages of a scenario, and fails the call on
//! anything else. Scenarios live in `tests/sipp/`; `{{NAME}}` placeholders
//! are filled here, `[keyword]`s are SIPp's own.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tempfile::TempDir;

use super::net::{free_sip_port, free_udp_port};
use super::process::{ChildProcess, file_tail};

/// How long SIPp may wait for any one message before it fails the call.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// One SIPp run of one scenario (one call), against Tutti on `127.0.0.1:sip_port`.
pub struct Sipp {
    process: ChildProcess,
    dir: TempDir,
}

/// How a SIPp run ended, with what it saw.
pub struct SippRun {
    pub status: ExitStatus,
    /// Every message sent and received (`-trace_msg`).
    pub messages: String,
    /// SIPp's own account of what went wrong, and the end of its output.
    pub errors: String,
}

impl SippRun {
    pub fn passed(&self) -> bool {
        self.status.success()
    }
}

impl Sipp {
    /// Starts `scenario` (a file in tests/sipp/) with its placeholders filled, calling
    /// `service` (the Request-URI's user), over TCP if `tcp`.
    pub fn start(scenario: &str, fills: &[(&str, &str)], service: &str, sip_port: u16, tcp: bool) -> Result<Sipp> {
        let template_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp").join(scenario);
        let mut text = std::fs::read_to_string(&template_path).with_context(|| format!("reading {}", template_path.display()))?;
        for (name, value) in fills {
            text = text.replace(&format!("{{{{{name}}}}}"), value);
        }
        if let Some(start) = text.find("{{") {
            return Err(anyhow!("scenario {scenario} still has a placeholder at {}", &text[start..(start + 20).min(text.len())]));
        }
        let dir = tempfile::Builder::new().prefix("tutti-sipp-").tempdir()?;
        let scenario_path = dir.path().join(scenario);
        std::fs::write(&scenario_path, text)?;
        let mut cmd = Command::new("sipp");
        cmd.current_dir(dir.path())
            .arg(format!("127.0.0.1:{sip_port}"))
            .arg("-sf")
            .arg(&scenario_path)
            .args(["-s", service, "-i", "127.0.0.1", "-m", "1", "-nostdin"])
            .args(["-p", &free_sip_port()?.to_string(), "-mp", &free_udp_port()?.to_string()])
            .args(["-t", if tcp { "t1" } else { "u1" }])
            .args(["-recv_timeout", &MESSAGE_TIMEOUT.as_millis().to_string(), "-timeout_error"])
            .args(["-timeout", "60s"])
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(dir.path().join("messages.log"))
            .arg("-trace_err")
            .arg("-error_file")
            .arg(dir.path().join("errors.log"));
        let process = ChildProcess::spawn("sipp", cmd, &dir.path().join("sipp.log"))?;
        Ok(Sipp { process, dir })
    }

    /// Runs `scenario` to its end.
    pub fn run(scenario: &str, fills: &[(&str, &str)], service: &str, sip_port: u16, tcp: bool) -> Result<SippRun> {
        Sipp::start(scenario, fills, service, sip_port, tcp)?.wait(Duration::from_secs(30))
    }

    /// Waits up to `timeout` for the scenario to end (then kills SIPp).
    pub fn wait(mut self, timeout: Duration) -> Result<SippRun> {
        let status = match self.process.wait_for_exit(timeout) {
            Some(status) => status,
            None => self.process.kill(),
        };
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        Ok(SippRun {
            status,
            messages: read("messages.log"),
            errors: format!("{}\n{}", read("errors.log"), file_tail(&self.dir.path().join("sipp.log"))),
        })
    }
}
