//! SIP calls that end at the worst moments, hundreds of times: a CANCEL
//! right behind the INVITE, a BYE before the ACK, a BYE right after it, a
//! DELETE through the API racing the caller's ACK. Throughout, the API
//! answers within a second; afterwards nobody is left behind and the
//! server has given back its threads, descriptors, ports and memory.
//!
//! The caller here is a few lines of SIP over one UDP socket, because SIPp
//! cannot send two requests without a response slipping in between.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use crate::common::{MediaPort, Server, pcmu_offer, wait_until};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const ROUNDS: usize = 300;
const API_DEADLINE: Duration = Duration::from_secs(1);
/// The process may keep some of what the first calls allocated (GStreamer's
/// registries and pools, glibc's arenas): what matters is no growth per call.
const RSS_GROWTH_LIMIT_KIB: u64 = 40 * 1024;

/// How a churned call ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ending {
    /// CANCEL right behind the INVITE.
    Cancel,
    /// BYE right after the 200 OK, before any ACK.
    ByeBeforeAck,
    /// ACK, then BYE at once.
    ByeAfterAck,
    /// The API removes the participant the moment the 200 OK arrives; the
    /// caller's ACK races Tutti's BYE.
    DeleteRacingAck,
}

/// One SIP dialog from a raw UDP socket.
struct RawCall {
    socket: UdpSocket,
    sip_port: u16,
    round: usize,
    to_tag: String,
    buf: Vec<u8>,
}

impl RawCall {
    fn new(sip_port: u16, round: usize) -> Result<RawCall> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(3)))?;
        socket.connect(("127.0.0.1", sip_port))?;
        Ok(RawCall { socket, sip_port, round, to_tag: String::new(), buf: vec![0; 8192] })
    }

    fn send(&self, method: &str, branch: &str, cseq: u32, body: Option<&str>) -> Result<()> {
        let local = self.socket.local_addr()?;
        let (sip_port, round, to_tag) = (self.sip_port, self.round, &self.to_tag);
        let content = match body {
            Some(body) => format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
            None => "Content-Length: 0\r\n\r\n".to_string(),
        };
        let message = format!(
            "{method} sip:churn@127.0.0.1:{sip_port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch}{round}\r\n\
             From: <sip:churner@{local}>;tag=c{round}\r\nTo: <sip:churn@127.0.0.1>{to_tag}\r\nCall-ID: churn-{round}@127.0.0.1\r\n\
             CSeq: {cseq} {method}\r\nContact: <sip:churner@{local}>\r\nMax-Forwards: 70\r\n{content}"
        );
        self.socket.send(message.as_bytes())?;
        Ok(())
    }

    /// Reads until the final response to `method`, answering a BYE from Tutti
    /// on the way; keeps the To tag of a response to the INVITE.
    fn final_response(&mut self, method: &str) -> Result<u16> {
        loop {
            let n = self.socket.recv(&mut self.buf)?;
            let text = String::from_utf8_lossy(&self.buf[..n]).into_owned();
            if text.starts_with("BYE ") {
                self.answer(&text)?;
                continue;
            }
            let status: u16 = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let header = |name: &str| text.lines().find(|l| l.to_ascii_lowercase().starts_with(name)).unwrap_or("").to_string();
            if status < 200 || !header("cseq:").ends_with(&format!(" {method}")) {
                continue;
            }
            if method == "INVITE" {
                self.to_tag = header("to:").split_once(";tag=").map(|(_, t)| format!(";tag={}", t.trim())).unwrap_or_default();
            }
            return Ok(status);
        }
    }

    /// Waits for Tutti's BYE and answers it.
    fn await_bye(&mut self) -> Result<()> {
        loop {
            let n = self.socket.recv(&mut self.buf)?;
            let text = String::from_utf8_lossy(&self.buf[..n]).into_owned();
            if text.starts_with("BYE ") {
                return self.answer(&text);
            }
        }
    }

    /// 200 OK to a request from Tutti, with its own Via, From, To, Call-ID and CSeq.
    fn answer(&self, request: &str) -> Result<()> {
        let copied: Vec<&str> = request
            .lines()
            .filter(|l| ["via:", "from:", "to:", "call-id:", "cseq:"].iter().any(|h| l.to_ascii_lowercase().starts_with(h)))
            .collect();
        let response = format!("SIP/2.0 200 OK\r\n{}\r\nContent-Length: 0\r\n\r\n", copied.join("\r\n"));
        self.socket.send(response.as_bytes())?;
        Ok(())
    }

    /// Plays one call to its `ending`; returns the INVITE's final status.
    fn play(mut self, ending: Ending, offer: &str, server: &Server, composition: &str) -> Result<u16> {
        self.send("INVITE", "inv", 1, Some(offer))?;
        if ending == Ending::Cancel {
            self.send("CANCEL", "inv", 1, None)?;
            let invite = self.final_response("INVITE")?;
            if invite == 200 {
                // Tutti's answer won the race: the caller ends the call it got (RFC 3261 §9.1).
                self.send("ACK", "ack", 1, None)?;
                self.send("BYE", "bye", 2, None)?;
                ensure!(self.final_response("BYE")? == 200, "BYE after a lost CANCEL race");
            } else {
                ensure!(invite == 487, "a cancelled INVITE answered {invite}");
                self.send("ACK", "inv", 1, None)?;
            }
            return Ok(invite);
        }
        let invite = self.final_response("INVITE")?;
        ensure!(invite == 200, "INVITE answered {invite}");
        match ending {
            Ending::ByeBeforeAck => {
                self.send("BYE", "bye", 2, None)?;
                ensure!(self.final_response("BYE")? == 200, "BYE before ACK");
            }
            Ending::ByeAfterAck => {
                self.send("ACK", "ack", 1, None)?;
                self.send("BYE", "bye", 2, None)?;
                ensure!(self.final_response("BYE")? == 200, "BYE after ACK");
            }
            Ending::DeleteRacingAck => {
                let path = format!("/v1/compositions/{composition}/participants");
                let listed = server.get(&path)?.json()?;
                let call_id = format!("churn-{}@127.0.0.1", self.round);
                let pid = listed["participants"]
                    .as_array()
                    .and_then(|list| list.iter().find(|p| p["sip"]["call_id"] == call_id.as_str()))
                    .and_then(|p| p["id"].as_str())
                    .map(str::to_string);
                let Some(pid) = pid else { bail!("call {call_id} not listed after its 200 OK: {listed}") };
                self.send("ACK", "ack", 1, None)?;
                let deleted = server.delete(&format!("{path}/{pid}"))?;
                ensure!(deleted.status == 204 || deleted.status == 202, "DELETE answered {}", deleted.status);
                self.await_bye()?;
            }
            Ending::Cancel => unreachable!("handled above"),
        }
        Ok(invite)
    }
}

/// GETs the composition every 50 ms and keeps the slowest answer.
struct Watcher {
    stop: Arc<AtomicBool>,
    slowest: Arc<Mutex<Duration>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(base_url: String, composition: String) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let slowest = Arc::new(Mutex::new(Duration::ZERO));
        let (stop_flag, worst) = (stop.clone(), slowest.clone());
        let thread = thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().expect("a client");
            while !stop_flag.load(Ordering::SeqCst) {
                let started = Instant::now();
                let ok = client.get(format!("{base_url}/v1/compositions/{composition}")).send().is_ok_and(|r| r.status() == 200);
                let took = if ok { started.elapsed() } else { Duration::from_secs(99) };
                let mut slowest = worst.lock().expect("watcher lock");
                *slowest = (*slowest).max(took);
                drop(slowest);
                thread::sleep(Duration::from_millis(50));
            }
        });
        Watcher { stop, slowest, thread: Some(thread) }
    }

    fn stop(mut self) -> Duration {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        *self.slowest.lock().expect("watcher lock")
    }
}

#[test]
fn calls_ending_at_the_worst_moments_leave_nothing_behind() -> Result<()> {
    // Calls come about 300 a second, beyond a node's join budget (INVITEs
    // spend it: tests/sip_signalling.rs); here nothing may be refused.
    let server = Server::start_with(&["--join-rate", "0"])?;
    let id = server.create_composition(&json!({"name": "churn", "audio_only": true}))?;
    let media = MediaPort::bind(false)?;
    let offer = pcmu_offer(media.rtp_port);
    let seed: u64 = rand::random();
    eprintln!("sip churn seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let endings = [Ending::Cancel, Ending::ByeBeforeAck, Ending::ByeAfterAck, Ending::DeleteRacingAck];

    // Warm up: the first calls load codecs and fill pools the process keeps.
    for round in 0..20 {
        RawCall::new(server.sip_port, round)?.play(Ending::ByeAfterAck, &offer, &server, &id)?;
    }
    wait_until("the warm-up calls to leave", Duration::from_secs(2), || Ok(server.get("/healthz")?.json()?["participants"] == 0))?;
    let before = server.footprint()?;

    let watcher = Watcher::start(server.base_url.clone(), id.clone());
    let started = Instant::now();
    let mut outcomes = std::collections::BTreeMap::new();
    for round in 20..20 + ROUNDS {
        let ending = endings[rng.random_range(0..endings.len())];
        let status = RawCall::new(server.sip_port, round)?
            .play(ending, &offer, &server, &id)
            .map_err(|e| anyhow::anyhow!("round {round} ({ending:?}): {e:#}\n{}", server.logs()))?;
        *outcomes.entry((ending, status)).or_insert(0) += 1;
    }
    let churn_took = started.elapsed();
    let slowest = watcher.stop();
    ensure!(slowest < API_DEADLINE, "the API answered a GET in {slowest:?} during the churn");

    wait_until("every churned caller to be gone", Duration::from_secs(2), || Ok(server.get("/healthz")?.json()?["participants"] == 0))?;
    wait_until("ports given back", Duration::from_secs(5), || Ok(server.bound_rtp_ports().is_empty()))?;
    // Stopped parts' threads go back to GLib's pool, which retires idle ones within 15 s.
    let threads_back = wait_until("threads given back", Duration::from_secs(20), || {
        Ok(server.footprint()?.thread_count() <= before.thread_count() + 2)
    });
    let after = server.footprint()?;
    eprintln!("{ROUNDS} calls in {churn_took:?}; outcomes {outcomes:?}; slowest GET {slowest:?}\nbefore {before:?}\nafter {after:?}");
    threads_back?;
    ensure!(after.fds <= before.fds, "descriptors not given back: {} → {}", before.fds, after.fds);
    let growth = after.rss_kib.saturating_sub(before.rss_kib);
    ensure!(growth < RSS_GROWTH_LIMIT_KIB, "memory grew by {growth} KiB over {ROUNDS} calls");
    println!("{ROUNDS} calls ending at the worst moments in {churn_took:?}: slowest GET {slowest:?}, RSS {} → {} KiB", before.rss_kib, after.rss_kib);
    Ok(())
}
