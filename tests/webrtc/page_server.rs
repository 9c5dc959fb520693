//! A tiny HTTP/1.1 server on 127.0.0.1 for the test page: `GET /` is the page,
//! `POST /offer` gives the page's offer SDP to a closure (which calls
//! `accept_offer` from this plain std thread, as the engine's thread will) and
//! answers with the answer SDP, or 400 and the error's sentence.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result};

/// A request that does not arrive in full within this is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// An offer is a few kB; anything much bigger is not one.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub type OfferHandler = Box<dyn Fn(&str) -> Result<String, String> + Send>;

pub struct PageServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PageServer {
    pub fn start(page: &'static str, on_offer: OfferHandler) -> Result<PageServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the page server")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::Builder::new().name("page-server".into()).spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(e) = serve(stream, page, &on_offer) {
                            eprintln!("page server: {e:#}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
                    Err(e) => eprintln!("page server accept: {e}"),
                }
            }
        })?;
        Ok(PageServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, page: &str, on_offer: &OfferHandler) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().context("Content-Length")?;
        }
    }
    let mut body = vec![0; content_length.min(MAX_BODY_BYTES)];
    reader.read_exact(&mut body)?;
    let mut words = request_line.split_whitespace();
    let (status, content_type, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/")) => ("200 OK", "text/html; charset=utf-8", page.to_string()),
        (Some("POST"), Some("/offer")) => match on_offer(&String::from_utf8_lossy(&body)) {
            Ok(answer) => ("200 OK", "application/sdp", answer),
            Err(error) => ("400 Bad Request", "text/plain", error),
        },
        _ => ("404 Not Found", "text/plain", "not here".to_string()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}
