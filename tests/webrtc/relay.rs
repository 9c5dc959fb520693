//! A lossy UDP relay on loopback, standing between a browser and Tutti.
//!
//! ```text
//!  browser ──► front (the candidate Tutti announces) ──drop loss% of RTP──► back ──► Tutti
//!  browser ◄── front ◄───────────────────── everything ◄─────────────────── back ◄── Tutti
//! ```
//!
//! Only RTP from the browser is dropped: STUN and DTLS get through, so every
//! run connects the same way, and the loss lands on the media the test
//! judges. The loss is pseudo-random from a fixed seed, the same each run.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How often each relay thread looks at the stop flag.
const READ_TIMEOUT: Duration = Duration::from_millis(50);
const SEED: u64 = 0x7u64 << 40 | 0x77;

pub struct LossyRelay {
    front: SocketAddr,
    sockets: Option<(UdpSocket, UdpSocket)>,
    loss_percent: u32,
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
            stop: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicU64::new(0)),
            forwarded: Arc::new(AtomicU64::new(0)),
            threads: Vec::new(),
        })
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
        let outbound = thread::Builder::new().name("relay-out".into()).spawn(move || {
            let mut buffer = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                let Ok(n) = back2.recv(&mut buffer) else { continue };
                let browser = *browser2.lock().unwrap();
                if let Some(browser) = browser {
                    let _ = front2.send_to(&buffer[..n], browser);
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

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
