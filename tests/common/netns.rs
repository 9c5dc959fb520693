//! Running a test inside a network namespace that has nothing but loopback.
//!
//! ```text
//!  cargo test ─► #[test] fn x ─► in_loopback_netns("x") ─► Parent: re-run this binary as
//!                 unshare -n -- sh -c 'ip link set lo up && ip route add default dev lo && exec …' <binary> x --exact ...
//!                   └─► child (TUTTI_TEST_NETNS=1): in_loopback_netns("x") ─► Inside: the body runs
//! ```
//!
//! A browser offers WebRTC candidates on every interface it finds and prefers
//! real ones to loopback; inside the namespace, loopback is all there is, so
//! media between Chromium and Tutti stays on 127.0.0.1 whatever the host has.
//! The default route goes to loopback too: a page without camera permission
//! (a WHEP viewer) gathers candidates only on the default route's interface.
//! Needs `unshare` (util-linux) and `ip` (iproute2), and root or
//! CAP_SYS_ADMIN for the new namespace.
//!
//! Used by the `webrtc_browser` test binary; the `integration` binary, which
//! shares this harness, has no test that needs it yet.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::process::run_bounded;

const INSIDE: &str = "TUTTI_TEST_NETNS";

/// Where the calling test is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Netns {
    /// In the loopback-only namespace: run the body.
    Inside,
    /// The body ran in a child in the namespace and passed; return.
    RanInChild,
}

/// Runs test `name` (its path as `--exact` takes it) in a loopback-only
/// namespace: called first thing in the test, it re-runs the test binary
/// there and checks the child passed exactly that test, or, in the child,
/// says to go on. The child's output is forwarded; `timeout` bounds it.
pub fn in_loopback_netns(name: &str, timeout: Duration) -> Result<Netns> {
    if std::env::var_os(INSIDE).is_some() {
        return Ok(Netns::Inside);
    }
    let binary = std::env::current_exe().context("the test binary's path")?;
    let mut command = Command::new("unshare");
    command
        .args(["-n", "--", "sh", "-c", r#"ip link set lo up && ip route add default dev lo && exec "$0" "$@""#])
        .arg(&binary)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1");
    let output = run_bounded(command, timeout)
        .with_context(|| format!("running {name} in a loopback-only network namespace (unshare -n, as root)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("----- {name} in its network namespace -----\n{stdout}{stderr}");
    ensure!(
        output.status.success(),
        "{name} failed in its network namespace ({})",
        output.status
    );
    ensure!(
        stdout.contains("test result: ok. 1 passed"),
        "{name} did not run exactly once in the namespace"
    );
    Ok(Netns::RanInChild)
}
