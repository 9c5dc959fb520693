//! How an actor learns it must stop: its handles share a `watch` of `bool`.

use tokio::sync::watch;

/// Resolves once `true` is sent, or once every handle (sender) is gone: an
/// actor nobody can reach any more stops too. Returns nothing, so no watch
/// guard is held across the caller's next `.await`.
pub async fn stop_requested(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|stop| *stop).await;
}
