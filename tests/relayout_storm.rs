//! A producer flicking between layouts as fast as the API answers, while
//! every caller's label is being drawn: 2000 changes, each resizing every
//! label, many of them mid-frame. The server must live
//! through it, answer every request, and keep every caller's return stream
//! flowing.
//!
//! This once crashed the server (SIGSEGV, `PangoLayout changed since
//! PangoLayoutIter was created`): GStreamer 1.22's textoverlay sets its font
//! without the lock its renderer holds, and the size was set from the engine
//! thread (see `Label` in src/media/picture.rs).

use anyhow::{Result, ensure};
use crate::common::*;
use serde_json::json;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Changes in the storm; each one resizes every caller's cell and label.
const CHANGES: usize = 2000;

#[test]
fn two_thousand_layout_changes_while_labels_draw_leave_everyone_streaming() {
    let server = Server::start().unwrap();
    if let Err(e) = storm(&server) {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

fn storm(server: &Server) -> Result<()> {
    let composition = server.create_composition(&json!({"video": {"width": 640, "height": 360}}))?;
    let mut callers = Vec::new();
    for (name, colour, tone) in [("Ada", Colour::Red, 500.0), ("Grace", Colour::Green, 700.0), ("Hedy", Colour::Blue, 1100.0)] {
        let mut caller = Caller::new(CallerSpec::new(name, colour, tone))?;
        caller.join(server, &composition)?;
        callers.push(caller);
    }
    sleep(Duration::from_secs(2));
    let layouts = [
        json!({"kind": "grid"}),
        json!({"kind": "speaker", "strip": "bottom"}),
        json!({"kind": "pip", "size": 0.3}),
        json!({"kind": "speaker", "strip": "right"}),
    ];
    let path = format!("/v1/compositions/{composition}/layout");
    let before: Vec<u64> = callers.iter().map(|c| c.rtp_packets(MediaKind::Video)).collect();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for change in 0..CHANGES {
        let asked = Instant::now();
        let response = server.put_json(&path, &layouts[change % layouts.len()])?;
        slowest = slowest.max(asked.elapsed());
        ensure!(response.status == 200, "change {change}: {} {}", response.status, response.body);
    }
    let storm_secs = started.elapsed().as_secs_f64();
    // Let the last change settle, then every caller still gets the composite.
    sleep(Duration::from_secs(1));
    for caller in &mut callers {
        caller.take_longest_rtp_gap(MediaKind::Video);
    }
    sleep(Duration::from_secs(2));
    for (i, caller) in callers.iter().enumerate() {
        let gap = caller.take_longest_rtp_gap(MediaKind::Video).unwrap_or(Duration::MAX);
        let sent = caller.rtp_packets(MediaKind::Video) - before[i];
        ensure!(gap < Duration::from_millis(200), "caller {i}: a {gap:?} gap in its return video after the storm");
        ensure!(sent > 0, "caller {i}: no return video during the storm");
    }
    ensure!(server.get("/healthz")?.status == 200, "the server does not answer after the storm");
    eprintln!("{CHANGES} layout changes in {storm_secs:.1} s, the slowest answered in {} ms", slowest.as_millis());
    ensure!(slowest < Duration::from_secs(1), "a layout change took {slowest:?} to answer");
    Ok(())
}
