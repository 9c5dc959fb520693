//! The byte stream under an RTMP session: plain TCP for `rtmp://`, TLS over
//! TCP for `rtmps://` (server certificates checked against the anchors of
//! [`RtmpsTrust`]).

use super::trust::{CertificateProblem, RtmpsTrust};
use super::url::{RtmpScheme, RtmpUrl};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

/// Anything RTMP can run over.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

pub type BoxedStream = Box<dyn ByteStream>;

#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("TCP connection to {addr} failed: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("no connection to {host} within {timeout:?}")]
    TimedOut { host: String, timeout: Duration },
    #[error("{0:?} is not a valid TLS server name")]
    BadServerName(String),
    #[error("TLS certificate of {host} is not trusted: {problem}")]
    UntrustedCertificate { host: String, problem: CertificateProblem },
    #[error("TLS handshake with {host} failed: {source}")]
    Tls { host: String, source: io::Error },
}

impl TransportError {
    /// Tells a rejected certificate (rustls' verdict, carried inside the
    /// I/O error tokio-rustls returns) from a handshake the network broke.
    fn from_handshake(host: &str, source: io::Error) -> TransportError {
        let verdict = source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match verdict {
            Some(rustls::Error::InvalidCertificate(error)) => TransportError::UntrustedCertificate {
                host: host.to_string(),
                problem: CertificateProblem::from(error),
            },
            _ => TransportError::Tls {
                host: host.to_string(),
                source,
            },
        }
    }
}

/// Resolves, connects and (for rtmps) completes TLS, all within `timeout`.
pub async fn connect(url: &RtmpUrl, trust: &RtmpsTrust, timeout: Duration) -> Result<BoxedStream, TransportError> {
    let host = url.host().to_string();
    tokio::time::timeout(timeout, connect_unbounded(url, trust))
        .await
        .unwrap_or(Err(TransportError::TimedOut { host, timeout }))
}

async fn connect_unbounded(url: &RtmpUrl, trust: &RtmpsTrust) -> Result<BoxedStream, TransportError> {
    let host = url.host();
    let addr = tokio::net::lookup_host((host, url.port()))
        .await
        .map_err(|source| TransportError::Resolve {
            host: host.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| TransportError::NoAddress { host: host.to_string() })?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| TransportError::Connect { addr, source })?;
    // RTMP messages are written whole; Nagle would only add latency.
    tcp.set_nodelay(true)
        .map_err(|source| TransportError::Connect { addr, source })?;
    match url.scheme() {
        RtmpScheme::Rtmp => Ok(Box::new(tcp)),
        RtmpScheme::Rtmps => {
            let name =
                ServerName::try_from(host.to_string()).map_err(|_| TransportError::BadServerName(host.to_string()))?;
            let tls = TlsConnector::from(trust.client_config())
                .connect(name, tcp)
                .await
                .map_err(|source| TransportError::from_handshake(host, source))?;
            Ok(Box::new(tls))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_tcp_connection_names_the_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = RtmpUrl::parse(&format!("rtmps://127.0.0.1:{port}/app/key")).unwrap();
        let error = connect(&url, &RtmpsTrust::load(None).unwrap(), Duration::from_secs(2)).await.err().expect("nothing listens there");
        assert!(matches!(error, TransportError::Connect { .. }), "{error}");
        assert!(error.to_string().starts_with(&format!("TCP connection to 127.0.0.1:{port} failed")), "{error}");
    }

    #[test]
    fn a_rejected_certificate_is_told_from_a_broken_handshake() {
        let rejected = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        );
        let error = TransportError::from_handshake("live.example.com", rejected);
        assert_eq!(error.to_string(), "TLS certificate of live.example.com is not trusted: expired");

        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let error = TransportError::from_handshake("live.example.com", reset);
        assert!(matches!(error, TransportError::Tls { .. }), "{error}");
    }
}
