//! RTMP destination URLs: `rtmp[s]://host[:port]/app[/more]/key`.
//!
//! Split the way OBS and ffmpeg users expect: the last path segment is the
//! stream key (with any query string, which services such as Facebook put
//! there), everything between the host and it is the application. The key
//! is a secret: `Display` and `Debug` show it masked, only
//! [`RtmpUrl::stream_key`] gives it whole.

use std::fmt;
use std::str::FromStr;

pub const RTMP_DEFAULT_PORT: u16 = 1935;
pub const RTMPS_DEFAULT_PORT: u16 = 443;
/// How many characters of the stream key a masked URL shows.
const KEY_CHARS_SHOWN: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtmpScheme {
    Rtmp,
    /// RTMP over TLS.
    Rtmps,
}

impl RtmpScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            RtmpScheme::Rtmp => "rtmp",
            RtmpScheme::Rtmps => "rtmps",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            RtmpScheme::Rtmp => RTMP_DEFAULT_PORT,
            RtmpScheme::Rtmps => RTMPS_DEFAULT_PORT,
        }
    }
}

#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("unsupported scheme {0:?}: use rtmp:// or rtmps://")]
    UnsupportedScheme(String),
    #[error("the URL has no host")]
    MissingHost,
    #[error("invalid host {0:?}")]
    BadHost(String),
    #[error("invalid port {0:?}: expected a number from 1 to 65535")]
    BadPort(String),
    #[error("the URL has no application: expected rtmp://host/app/stream-key")]
    MissingApp,
    #[error("the URL has no stream key: expected rtmp://host/app/stream-key")]
    MissingStreamKey,
}

#[derive(Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    scheme: RtmpScheme,
    host: String,
    port: u16,
    app: String,
    stream_key: String,
}

impl RtmpUrl {
    pub fn parse(url: &str) -> Result<RtmpUrl, UrlError> {
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| UrlError::UnsupportedScheme(url.to_string()))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "rtmp" => RtmpScheme::Rtmp,
            "rtmps" => RtmpScheme::Rtmps,
            _ => return Err(UrlError::UnsupportedScheme(scheme.to_string())),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = parse_authority(authority, scheme)?;

        // The query belongs to the key, and may itself contain slashes.
        let query_start = path.find('?').unwrap_or(path.len());
        let (app, key) = match path[..query_start].rfind('/') {
            Some(split) => (&path[..split], &path[split + 1..]),
            None if path.is_empty() => return Err(UrlError::MissingApp),
            None => return Err(UrlError::MissingStreamKey),
        };
        let app = app.trim_matches('/');
        if app.is_empty() {
            return Err(UrlError::MissingApp);
        }
        if key.is_empty() || key.starts_with('?') {
            return Err(UrlError::MissingStreamKey);
        }
        Ok(RtmpUrl {
            scheme,
            host,
            port,
            app: app.to_string(),
            stream_key: key.to_string(),
        })
    }

    pub fn scheme(&self) -> RtmpScheme {
        self.scheme
    }

    /// Host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The application, sent in `connect`.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The secret stream key, sent in `publish`. Never log it.
    pub fn stream_key(&self) -> &str {
        &self.stream_key
    }

    /// The `tcUrl` of `connect`: the URL without the key, with the port
    /// spelled out as ffmpeg does (some services insist on a tcUrl).
    pub fn tc_url(&self) -> String {
        format!(
            "{}://{}:{}/{}",
            self.scheme.as_str(),
            self.host_for_url(),
            self.port,
            self.app
        )
    }

    /// The stream key with all but its first few characters hidden.
    pub fn masked_stream_key(&self) -> String {
        mask_stream_key(&self.stream_key)
    }

    /// The URL as it is safe to log or show: the stream key masked.
    pub fn masked(&self) -> String {
        let port = if self.port == self.scheme.default_port() {
            String::new()
        } else {
            format!(":{}", self.port)
        };
        format!(
            "{}://{}{}/{}/{}",
            self.scheme.as_str(),
            self.host_for_url(),
            port,
            self.app,
            self.masked_stream_key()
        )
    }

    fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

fn parse_authority(authority: &str, scheme: RtmpScheme) -> Result<(String, u16), UrlError> {
    if authority.is_empty() {
        return Err(UrlError::MissingHost);
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        // IPv6 literal: [::1] or [::1]:1935
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| UrlError::BadHost(authority.to_string()))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(UrlError::BadHost(authority.to_string())),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::MissingHost);
    }
    let is_host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if !host.chars().all(is_host_char) {
        return Err(UrlError::BadHost(host.to_string()));
    }
    let port = match port {
        None => scheme.default_port(),
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(UrlError::BadPort(port.to_string())),
        },
    };
    Ok((host.to_string(), port))
}

impl FromStr for RtmpUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RtmpUrl::parse(s)
    }
}

impl fmt::Display for RtmpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Masked too, so a `{:?}` in a log line cannot leak the key.
impl fmt::Debug for RtmpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RtmpUrl({})", self.masked())
    }
}

/// A stream key as it is safe to log or show: all but its first few
/// characters (at most half of it) hidden.
pub fn mask_stream_key(key: &str) -> String {
    let shown = KEY_CHARS_SHOWN.min(key.chars().count() / 2);
    let prefix: String = key.chars().take(shown).collect();
    format!("{prefix}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (RtmpScheme, String, u16, String, String) {
        let url = RtmpUrl::parse(url).unwrap();
        (
            url.scheme(),
            url.host().to_string(),
            url.port(),
            url.app().to_string(),
            url.stream_key().to_string(),
        )
    }

    #[test]
    fn youtube_url_splits_app_and_key_on_the_default_port() {
        assert_eq!(
            parts("rtmp://a.rtmp.youtube.com/live2/xxxx-xxxx-xxxx-xxxx"),
            (
                RtmpScheme::Rtmp,
                "a.rtmp.youtube.com".into(),
                1935,
                "live2".into(),
                "xxxx-xxxx-xxxx-xxxx".into()
            )
        );
    }

    #[test]
    fn twitch_url_keeps_underscores_in_the_key() {
        assert_eq!(
            parts("rtmp://live.twitch.tv/app/live_123_abc"),
            (
                RtmpScheme::Rtmp,
                "live.twitch.tv".into(),
                1935,
                "app".into(),
                "live_123_abc".into()
            )
        );
    }

    #[test]
    fn facebook_rtmps_url_keeps_the_query_string_on_the_key() {
        assert_eq!(
            parts("rtmps://live-api-s.facebook.com:443/rtmp/FB-123?s_bl=1&s_sc=2"),
            (
                RtmpScheme::Rtmps,
                "live-api-s.facebook.com".into(),
                443,
                "rtmp".into(),
                "FB-123?s_bl=1&s_sc=2".into()
            )
        );
    }

    #[test]
    fn rtmps_defaults_to_port_443() {
        assert_eq!(RtmpUrl::parse("rtmps://example.com/app/key").unwrap().port(), 443);
    }

    #[test]
    fn nginx_url_with_explicit_port() {
        assert_eq!(
            parts("rtmp://127.0.0.1:1935/live/test"),
            (RtmpScheme::Rtmp, "127.0.0.1".into(), 1935, "live".into(), "test".into())
        );
    }

    #[test]
    fn every_segment_but_the_last_is_the_app() {
        let url = RtmpUrl::parse("rtmp://host/live/region/eu/key").unwrap();
        assert_eq!((url.app(), url.stream_key()), ("live/region/eu", "key"));
    }

    #[test]
    fn slashes_in_the_query_stay_with_the_key() {
        let url = RtmpUrl::parse("rtmp://host/live/key?next=/a/b").unwrap();
        assert_eq!((url.app(), url.stream_key()), ("live", "key?next=/a/b"));
    }

    #[test]
    fn scheme_is_case_insensitive_and_ipv6_literals_work() {
        let url = RtmpUrl::parse("RTMP://[::1]:1940/live/k").unwrap();
        assert_eq!((url.host(), url.port()), ("::1", 1940));
        assert_eq!(url.tc_url(), "rtmp://[::1]:1940/live");
    }

    #[test]
    fn tc_url_is_the_url_without_the_key_with_the_port() {
        let url = RtmpUrl::parse("rtmp://a.rtmp.youtube.com/live2/secret").unwrap();
        assert_eq!(url.tc_url(), "rtmp://a.rtmp.youtube.com:1935/live2");
    }

    #[test]
    fn masked_url_shows_only_the_first_four_characters_of_the_key() {
        let url = RtmpUrl::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl").unwrap();
        assert_eq!(url.masked(), "rtmp://a.rtmp.youtube.com/live2/abcd…");
        assert_eq!(url.to_string(), url.masked());
        assert!(!format!("{url:?}").contains("efgh"));
    }

    #[test]
    fn masked_url_never_shows_a_short_key_in_full() {
        let url = RtmpUrl::parse("rtmp://127.0.0.1:1936/live/test").unwrap();
        assert_eq!(url.masked(), "rtmp://127.0.0.1:1936/live/te…");
        let url = RtmpUrl::parse("rtmp://h/live/k").unwrap();
        assert_eq!(url.masked(), "rtmp://h/live/…");
    }

    #[test]
    fn masked_url_hides_query_strings_with_the_key() {
        let url = RtmpUrl::parse("rtmps://live-api-s.facebook.com:443/rtmp/FB-123?s_bl=1").unwrap();
        assert_eq!(url.masked(), "rtmps://live-api-s.facebook.com/rtmp/FB-1…");
    }

    #[test]
    fn other_schemes_are_rejected_by_name() {
        assert_eq!(
            RtmpUrl::parse("http://host/app/key"),
            Err(UrlError::UnsupportedScheme("http".into()))
        );
        assert_eq!(
            RtmpUrl::parse("srt://host:9000"),
            Err(UrlError::UnsupportedScheme("srt".into()))
        );
        assert!(matches!(
            RtmpUrl::parse("host/app/key"),
            Err(UrlError::UnsupportedScheme(_))
        ));
    }

    #[test]
    fn a_url_without_a_key_is_rejected() {
        assert_eq!(RtmpUrl::parse("rtmp://host/live"), Err(UrlError::MissingStreamKey));
        assert_eq!(RtmpUrl::parse("rtmp://host/live/"), Err(UrlError::MissingStreamKey));
        assert_eq!(RtmpUrl::parse("rtmp://host/live/?x=1"), Err(UrlError::MissingStreamKey));
    }

    #[test]
    fn a_url_without_an_app_is_rejected() {
        assert_eq!(RtmpUrl::parse("rtmp://host"), Err(UrlError::MissingApp));
        assert_eq!(RtmpUrl::parse("rtmp://host/"), Err(UrlError::MissingApp));
        assert_eq!(RtmpUrl::parse("rtmp://host//key"), Err(UrlError::MissingApp));
    }

    #[test]
    fn bad_ports_and_hosts_are_rejected() {
        assert_eq!(
            RtmpUrl::parse("rtmp://host:99999/a/k"),
            Err(UrlError::BadPort("99999".into()))
        );
        assert_eq!(RtmpUrl::parse("rtmp://host:0/a/k"), Err(UrlError::BadPort("0".into())));
        assert_eq!(
            RtmpUrl::parse("rtmp://host:abc/a/k"),
            Err(UrlError::BadPort("abc".into()))
        );
        assert_eq!(RtmpUrl::parse("rtmp://host:/a/k"), Err(UrlError::BadPort("".into())));
        assert_eq!(RtmpUrl::parse("rtmp:///a/k"), Err(UrlError::MissingHost));
        assert_eq!(
            RtmpUrl::parse("rtmp://user@host/a/k"),
            Err(UrlError::BadHost("user@host".into()))
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// What every parsed URL promises, whatever text it came from.
    fn check_invariants(url: &RtmpUrl) {
        assert!(url.port() > 0);
        assert!(!url.host().is_empty());
        assert!(!url.app().is_empty() && !url.app().starts_with('/') && !url.app().ends_with('/'));
        assert!(!url.stream_key().is_empty() && !url.stream_key().starts_with('?'));
        let before_query = url.stream_key().split('?').next().unwrap_or_default();
        assert!(!before_query.contains('/'), "the key is the last segment: {:?}", url.stream_key());
        // The whole URL again, key in clear: it parses back to the same URL.
        let spelled_out = format!("{}/{}", url.tc_url(), url.stream_key());
        assert_eq!(RtmpUrl::parse(&spelled_out).as_ref(), Ok(url), "{spelled_out}");
        check_masking(url);
    }

    /// The masked forms are the URL with at most the first few characters of
    /// the key, and at most half of it: never the key itself.
    fn check_masking(url: &RtmpUrl) {
        let key = url.stream_key();
        let masked_key = url.masked_stream_key();
        let shown = masked_key.strip_suffix('…').expect("the masked key ends with an ellipsis");
        assert!(key.starts_with(shown));
        let shown_chars = shown.chars().count();
        assert!(shown_chars <= KEY_CHARS_SHOWN && shown_chars <= key.chars().count() / 2, "{key:?} shown as {masked_key:?}");
        let port = if url.port() == url.scheme().default_port() { String::new() } else { format!(":{}", url.port()) };
        let host = if url.host().contains(':') { format!("[{}]", url.host()) } else { url.host().to_string() };
        let expected = format!("{}://{host}{port}/{}/{masked_key}", url.scheme().as_str(), url.app());
        assert_eq!(url.masked(), expected);
        assert_eq!(url.to_string(), expected);
        assert_eq!(format!("{url:?}"), format!("RtmpUrl({expected})"));
    }

    fn scheme() -> impl Strategy<Value = (&'static str, RtmpScheme)> {
        prop::sample::select(vec![
            ("rtmp", RtmpScheme::Rtmp),
            ("RTMP", RtmpScheme::Rtmp),
            ("rtmps", RtmpScheme::Rtmps),
            ("RtMpS", RtmpScheme::Rtmps),
        ])
    }

    /// (as written in the URL, as `host()` returns it)
    fn host() -> impl Strategy<Value = (String, String)> {
        prop_oneof![
            "[a-z0-9]([a-z0-9_-]{0,10}[a-z0-9])?(\\.[a-z0-9-]{1,10}){0,3}".prop_map(|h| (h.clone(), h)),
            any::<std::net::Ipv4Addr>().prop_map(|ip| (ip.to_string(), ip.to_string())),
            any::<std::net::Ipv6Addr>().prop_map(|ip| (format!("[{ip}]"), ip.to_string())),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn arbitrary_text_parses_to_a_consistent_url_or_a_typed_error(text in any::<String>()) {
            if let Ok(url) = RtmpUrl::parse(&text) {
                check_invariants(&url);
            }
        }

        #[test]
        fn url_shaped_text_parses_to_a_consistent_url_or_a_typed_error(
            text in "(rtmps?|RTMP|http)://(\\[[0-9a-f:]{0,8}\\]|[a-z0-9.:@_-]{0,12})(:[0-9]{0,6})?(/[a-z0-9?=&./ -]{0,8}){0,4}",
        ) {
            if let Ok(url) = RtmpUrl::parse(&text) {
                check_invariants(&url);
            }
        }

        #[test]
        fn well_formed_urls_parse_into_their_parts_and_back(
            (scheme_text, scheme) in scheme(),
            (host_text, host) in host(),
            port in prop::option::of(1u16..),
            app in prop::collection::vec("[A-Za-z0-9._~-]{1,8}", 1..4),
            key in "[A-Za-z0-9_~.-]{1,24}",
            query in prop::option::of("[!-~]{0,20}"),
        ) {
            let app = app.join("/");
            let key = match query {
                Some(query) => format!("{key}?{query}"),
                None => key,
            };
            let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
            let text = format!("{scheme_text}://{host_text}{port_text}/{app}/{key}");
            let url = RtmpUrl::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            prop_assert_eq!(url.scheme(), scheme);
            prop_assert_eq!(url.host(), host.as_str());
            prop_assert_eq!(url.port(), port.unwrap_or(scheme.default_port()));
            prop_assert_eq!(url.app(), app.as_str());
            prop_assert_eq!(url.stream_key(), key.as_str());
            check_invariants(&url);
        }
    }
}
