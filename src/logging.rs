//! Log lines (`tracing`) on stdout, in colour only where a person reads
//! them: a terminal, unless `NO_COLOR` says otherwise (https://no-color.org).
//! A log file or a journal gets plain text, with no escape codes to strip.

use std::ffi::OsString;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; the level comes from `RUST_LOG` (default "info").
pub fn init() {
    let colour = wants_colour(std::io::stdout().is_terminal(), std::env::var_os("NO_COLOR"));
    let directives = filter_directives(std::env::var("RUST_LOG").ok());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(DEFAULT_DIRECTIVES)))
        .with_ansi(colour)
        .init();
}

const DEFAULT_DIRECTIVES: &str = "info,rsipstack=warn";

/// `RUST_LOG`, or "info"; the SIP stack logs every message it sends and
/// receives at info, so it stays at warn unless `RUST_LOG` names it.
fn filter_directives(rust_log: Option<String>) -> String {
    match rust_log.filter(|v| !v.trim().is_empty()) {
        Some(value) if value.contains("rsipstack") => value,
        Some(value) => format!("{value},rsipstack=warn"),
        None => DEFAULT_DIRECTIVES.to_string(),
    }
}

/// Colour on a terminal, unless `NO_COLOR` is set to anything but the empty string.
fn wants_colour(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sip_stack_stays_quiet_unless_asked_for() {
        assert_eq!(filter_directives(None), "info,rsipstack=warn");
        assert_eq!(filter_directives(Some("debug".into())), "debug,rsipstack=warn");
        assert_eq!(filter_directives(Some("info,rsipstack=debug".into())), "info,rsipstack=debug");
    }

    #[test]
    fn colour_only_on_a_terminal() {
        assert!(wants_colour(true, None));
        assert!(!wants_colour(false, None));
    }

    #[test]
    fn no_color_turns_colour_off_unless_empty() {
        assert!(!wants_colour(true, Some("1".into())));
        assert!(!wants_colour(true, Some("0".into())), "any value but the empty string");
        assert!(wants_colour(true, Some("".into())));
    }
}
