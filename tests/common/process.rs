//! Child processes that can never outlive a test, and bounded waiting.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};

/// How much of a log `text_tail` returns: enough for a panic message, not a flood.
const LOG_TAIL_BYTES: usize = 16 * 1024;
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A spawned process whose stdout and stderr go to a log file; dropping it kills it.
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    /// Spawns `cmd`, appending its output to `log` (a restarted process shares the file).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let mut out = OpenOptions::new().create(true).append(true).open(log)?;
        writeln!(out, "=== {name} started at {:?}: {cmd:?}", SystemTime::now())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        Ok(Self { name: name.to_owned(), child, log: log.to_owned() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has ended (reaping it), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `signal` ("INT", "TERM", ...) unless the process has already been reaped.
    pub fn signal(&mut self, signal: &str) {
        if self.exit_status().is_some() {
            return; // its pid may belong to someone else now
        }
        // std only offers SIGKILL; the `kill` utility avoids a libc dependency.
        let _ = Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).stderr(Stdio::null()).status();
    }

    /// Waits up to `timeout` for the process to end.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let _ = poll(timeout, || Ok(self.exit_status().is_some()));
        self.exit_status()
    }

    /// Sends `signal`, waits up to `grace` for the process to end, then SIGKILLs it.
    pub fn stop(&mut self, signal: &str, grace: Duration) -> ExitStatus {
        self.signal(signal);
        self.wait_for_exit(grace).unwrap_or_else(|| self.kill())
    }

    /// SIGKILLs the process (if still running) and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("waiting for a killed child cannot fail")
    }

    /// The last part of the log, labelled with the process name.
    pub fn log_tail(&self) -> String {
        format!("----- {} ({}) -----\n{}", self.name, self.log.display(), file_tail(&self.log))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The end of a log file (lossily decoded): where the error usually is.
pub fn file_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => text_tail(&String::from_utf8_lossy(&bytes)).to_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The last `LOG_TAIL_BYTES` (or so) of `text`.
pub fn text_tail(text: &str) -> &str {
    let start = (text.len().saturating_sub(LOG_TAIL_BYTES)..text.len()).find(|&i| text.is_char_boundary(i));
    &text[start.unwrap_or(0)..]
}

/// Runs a command to completion with captured output, killing it after `timeout`.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<Output> {
    // Output goes to files rather than pipes so a chatty child can never block on a full pipe
    // while we poll it.
    let dir = tempfile::tempdir()?;
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    if !poll(timeout, || Ok(child.try_wait()?.is_some()))? {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{cmd:?} did not finish within {timeout:?}");
    }
    Ok(Output { status: child.wait()?, stdout: fs::read(out_path)?, stderr: fs::read(err_path)? })
}

/// Polls `ready` until it returns true, failing after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, ready: impl FnMut() -> Result<bool>) -> Result<()> {
    ensure!(poll(timeout, ready)?, "timed out after {timeout:?} waiting for {what}");
    Ok(())
}

/// Calls `ready` every `POLL_INTERVAL` until it returns true (then true) or `timeout` has
/// passed (then false).
fn poll(timeout: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// What a process holds, read from /proc: to tell whether it gives back what
/// parts that came and went had taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    pub fds: usize,
    /// Thread names (Linux keeps 15 characters) and how many have each.
    pub threads: std::collections::BTreeMap<String, usize>,
    pub rss_kib: u64,
}

impl Footprint {
    pub fn of(pid: u32) -> Result<Footprint> {
        let fds = fs::read_dir(format!("/proc/{pid}/fd"))?.count();
        let mut threads = std::collections::BTreeMap::new();
        for task in fs::read_dir(format!("/proc/{pid}/task"))? {
            // A thread that ended since the listing is simply not counted.
            if let Ok(name) = fs::read_to_string(task?.path().join("comm")) {
                *threads.entry(name.trim().to_owned()).or_default() += 1;
            }
        }
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS in /proc/pid/status")?;
        let rss_kib = rss.split_whitespace().nth(1).context("empty VmRSS line")?.parse()?;
        Ok(Footprint { fds, threads, rss_kib })
    }

    pub fn thread_count(&self) -> usize {
        self.threads.values().sum()
    }
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from field 3 on: utime is 14, stime 15.
    let rest = stat.rsplit_once(')').context("no command name in /proc/pid/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11).context("no utime")?.parse::<f64>()? + fields.get(12).context("no stime")?.parse::<f64>()?;
    // The kernel's USER_HZ is 100 on every Linux we run on.
    Ok(ticks / 100.0)
}
