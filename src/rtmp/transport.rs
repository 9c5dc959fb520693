//! The byte stream under an RTMP session: plain TCP for `rtmp://`, TLS over
//! TCP for `rtmps://` (server certificates checked against the Mozilla
//! roots bundled by `webpki-roots`, so no system store is needed).

use super::url::{RtmpScheme, RtmpUrl};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
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
    #[error("TLS handshake with {host} failed: {source}")]
    Tls { host: String, source: io::Error },
}

/// Resolves, connects and (for rtmps) completes TLS, all within `timeout`.
pub async fn connect(url: &RtmpUrl, timeout: Duration) -> Result<BoxedStream, TransportError> {
    let host = url.host().to_string();
    tokio::time::timeout(timeout, connect_unbounded(url))
        .await
        .unwrap_or(Err(TransportError::TimedOut { host, timeout }))
}

async fn connect_unbounded(url: &RtmpUrl) -> Result<BoxedStream, TransportError> {
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
            let tls = TlsConnector::from(tls_config())
                .connect(name, tcp)
                .await
                .map_err(|source| TransportError::Tls {
                    host: host.to_string(),
                    source,
                })?;
            Ok(Box::new(tls))
        }
    }
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .expect("ring supports rustls' default protocol versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_config_is_built_once_from_the_bundled_roots() {
        assert!(Arc::ptr_eq(&tls_config(), &tls_config()));
    }

    #[tokio::test]
    async fn a_refused_tcp_connection_names_the_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = RtmpUrl::parse(&format!("rtmps://127.0.0.1:{port}/app/key")).unwrap();
        let error = connect(&url, Duration::from_secs(2)).await.err().expect("nothing listens there");
        assert!(matches!(error, TransportError::Connect { .. }), "{error}");
        assert!(error.to_string().starts_with(&format!("TCP connection to 127.0.0.1:{port} failed")), "{error}");
    }
}
