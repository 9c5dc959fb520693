//! A lossy or narrow UDP link on loopback, standing between a browser and Tutti.
//!
//! ```text
//!  browser ──► front (the candidate Tutti announces) ──drop loss% of RTP──► back ──► Tutti
//!  browser ◄── front ◄──── everything, or at most `downlink_kbps` ◄──────── back ◄── Tutti
//! ```
//!
//! Only RTP from the browser is dropped: STUN and DTLS get through, so every
//! run connects the same way, and the loss lands on the media the test
//! judges. The loss is pseudo-random from a fixed seed, the same each run.
//!
//! A narrow downlink behaves as a bottleneck router does: packets leave at
//! its rate, wait in a queue of at most [`QUEUE_DELAY`], and the ones that
//! would wait longer are dropped (drop-tail).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How often each relay thread looks at the stop flag.
const READ_TIMEOUT: Duration = Duration::from_millis(50);
const SEED: u64 = 0x7u64 << 40 | 0x77;
/// The longest a packet waits in a narrow downlink's queue: a home router's buffer.
const QUEUE_DELAY: Duration = Duration::from_millis(200);
/// How often a narrow downlink looks for packets due to leave.
const PACING_TICK: Duration = Duration::from_millis(2);

pub struct LossyRelay {
    front: SocketAddr,
    sockets: Option<(UdpSocket, UdpSocket)>,
    loss_percent: u32,
    downlink_kbps: Option<u32>,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    forwarded: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl LossyRelay {
    /// Binds the relay's front (the browser's side) and back (Tutti's side);
    /// nothing moves until [`LossyRelay::forward_to`].
    pub fn bind(loss_percent: u32) -> Result<LossyRelay> {
        let front = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let back = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        front.set_read_timeout(Some(READ_TIMEOUT))?;
        back.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(LossyRelay {
            front: front.local_addr()?,
            sockets: Some((front, back)),
            loss_percent,
            downlink_kbps: None,
            stop: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicU64::new(0)),
            forwarded: Arc::new(AtomicU64::new(0)),
            threads: Vec::new(),
        })
    }

    /// Lets at most `kbps` through towards the browser (see the module doc).
    pub fn with_downlink_kbps(mut self, kbps: u32) -> LossyRelay {
        self.downlink_kbps = Some(kbps);
        self
    }

    /// Starts relaying to `upstream`, dropping the set share of the browser's RTP packets.
    pub fn forward_to(&mut self, upstream: SocketAddr) -> Result<()> {
        let Some((front, back)) = self.sockets.take() else {
            anyhow::bail!("the relay runs already")
        };
        back.connect(upstream)?;
        let loss_percent = self.loss_percent;
        let browser: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let (front2, back2) = (front.try_clone()?, back.try_clone()?);
        let (stop1, stop2) = (self.stop.clone(), self.stop.clone());
        let (dropped, forwarded, browser1, browser2) =
            (self.dropped.clone(), self.forwarded.clone(), browser.clone(), browser);
        let inbound = thread::Builder::new().name("relay-in".into()).spawn(move || {
            let mut rng = StdRng::seed_from_u64(SEED);
            let mut buffer = [0u8; 2048];
            while !stop1.load(Ordering::Relaxed) {
                let Ok((n, source)) = front.recv_from(&mut buffer) else {
                    continue;
                };
                *browser1.lock().unwrap() = Some(source);
                let packet = &buffer[..n];
                let rtp = matches!(packet.first(), Some(128..=191)) && !matches!(packet.get(1), Some(192..=223));
                if rtp && rng.random_range(0..100) < loss_percent {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                forwarded.fetch_add(1, Ordering::Relaxed);
                let _ = back.send(packet);
            }
        })?;
        let mut link = self.downlink_kbps.map(Bottleneck::new);
        if link.is_some() {
            back2.set_read_timeout(Some(PACING_TICK))?;
        }
        let outbound = thread::Builder::new().name("relay-out".into()).spawn(move || {
            let mut buffer = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                let received = back2.recv(&mut buffer).ok();
                let Some(browser) = *browser2.lock().unwrap() else { continue };
                match &mut link {
                    None => {
                        if let Some(n) = received {
                            let _ = front2.send_to(&buffer[..n], browser);
                        }
                    }
                    Some(link) => {
                        if let Some(n) = received {
                            link.enqueue(&buffer[..n]);
                        }
                        for packet in link.due() {
                            let _ = front2.send_to(&packet, browser);
                        }
                    }
                }
            }
        })?;
        self.threads = vec![inbound, outbound];
        Ok(())
    }

    /// Where the browser is to send: the address Tutti announces.
    pub fn front(&self) -> SocketAddr {
        self.front
    }

    /// RTP packets from the browser dropped, and packets forwarded to Tutti.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.dropped.load(Ordering::Relaxed),
            self.forwarded.load(Ordering::Relaxed),
        )
    }
}

/// A link of a fixed rate with a drop-tail queue.
struct Bottleneck {
    bytes_per_sec: f64,
    /// Packets in the queue, each with the time its last bit leaves.
    queue: VecDeque<(Instant, Vec<u8>)>,
    /// When the link is free again.
    free_at: Instant,
}

impl Bottleneck {
    fn new(kbps: u32) -> Bottleneck {
        Bottleneck { bytes_per_sec: f64::from(kbps) * 1000.0 / 8.0, queue: VecDeque::new(), free_at: Instant::now() }
    }

    fn enqueue(&mut self, packet: &[u8]) {
        let now = Instant::now();
        let start = self.free_at.max(now);
        if start - now > QUEUE_DELAY {
            return;
        }
        self.free_at = start + Duration::from_secs_f64(packet.len() as f64 / self.bytes_per_sec);
        self.queue.push_back((self.free_at, packet.to_vec()));
    }

    fn due(&mut self) -> Vec<Vec<u8>> {
        let now = Instant::now();
        let mut due = Vec::new();
        while self.queue.front().is_some_and(|(at, _)| *at <= now) {
            due.extend(self.queue.pop_front().map(|(_, packet)| packet));
        }
        due
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
