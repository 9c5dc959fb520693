//! The RTMP handshake (C0-C2 / S0-S2) over any byte stream, for both the
//! publisher and the embedded server, bounded by a deadline so a peer that
//! accepts TCP and then stays silent cannot hold a task forever.

use rml_rtmp::handshake::{Handshake, HandshakeError, HandshakeProcessResult, PeerType};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum HandshakeFailure {
    #[error("no RTMP handshake within {0:?}")]
    TimedOut(Duration),
    #[error("the peer closed the connection during the RTMP handshake")]
    Closed,
    #[error("socket error during the RTMP handshake: {0}")]
    Io(#[from] io::Error),
    #[error("invalid RTMP handshake: {0}")]
    Invalid(#[from] HandshakeError),
}

/// Runs the handshake as `peer`; returns the bytes the peer sent after it,
/// which belong to the RTMP session.
pub async fn handshake<S>(stream: &mut S, peer: PeerType, timeout: Duration) -> Result<Vec<u8>, HandshakeFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(timeout, run(stream, peer))
        .await
        .unwrap_or(Err(HandshakeFailure::TimedOut(timeout)))
}

async fn run<S>(stream: &mut S, peer: PeerType) -> Result<Vec<u8>, HandshakeFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let is_client = matches!(peer, PeerType::Client);
    let mut handshake = Handshake::new(peer);
    if is_client {
        stream.write_all(&handshake.generate_outbound_p0_and_p1()?).await?;
    }
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(HandshakeFailure::Closed);
        }
        match handshake.process_bytes(&buf[..n])? {
            HandshakeProcessResult::InProgress { response_bytes } => stream.write_all(&response_bytes).await?,
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}
