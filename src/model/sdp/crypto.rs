//! SRTP with keys in the SDP (SDES, RFC 4568): the `a=crypto` lines of an
//! `RTP/SAVP(F)` m-line, the suite Tutti picks, the keys each side uses,
//! and the node's policy on encryption.
//!
//! Tutti takes the first `a=crypto` line in the offerer's order that it can
//! honour, answers it with its own fresh master key and salt under the same
//! tag and suite, and encrypts what it sends with that key while
//! decrypting what it receives with the offerer's.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::fmt;
use std::str::FromStr;

/// AES-128 master key (16 bytes) followed by its 14-byte master salt: the
/// `key||salt` of RFC 4568 6.1 for both suites Tutti supports.
pub const MASTER_KEY_LEN: usize = 30;

/// Whether callers' media is encrypted (`--media-encryption`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaEncryption {
    /// Plain RTP only: SRTP m-lines are declined.
    Off,
    /// SRTP when the caller offers it, plain RTP when it offers that.
    #[default]
    Optional,
    /// SRTP only: plain RTP m-lines are declined.
    Required,
}

impl MediaEncryption {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaEncryption::Off => "off",
            MediaEncryption::Optional => "optional",
            MediaEncryption::Required => "required",
        }
    }

    /// Why an m-line of this protection is declined under this policy, if it is.
    pub fn refusal(self, encrypted: bool) -> Option<String> {
        match (self, encrypted) {
            (MediaEncryption::Off, true) => Some("SRTP (RTP/SAVP) is refused: media_encryption is off".into()),
            (MediaEncryption::Required, false) => {
                Some("plain RTP is refused: media_encryption is required (offer RTP/SAVP with a=crypto)".into())
            }
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a media encryption policy (off, optional or required)")]
pub struct UnknownMediaEncryption(String);

impl FromStr for MediaEncryption {
    type Err = UnknownMediaEncryption;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(MediaEncryption::Off),
            "optional" => Ok(MediaEncryption::Optional),
            "required" => Ok(MediaEncryption::Required),
            other => Err(UnknownMediaEncryption(other.to_owned())),
        }
    }
}

/// The SRTP crypto suites Tutti speaks (RFC 4568 6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrtpSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl SrtpSuite {
    pub fn name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    fn from_name(name: &str) -> Option<SrtpSuite> {
        [SrtpSuite::AesCm128HmacSha1_80, SrtpSuite::AesCm128HmacSha1_32].into_iter().find(|s| s.name() == name)
    }

    /// Length in bits of the authentication tag on SRTP packets. SRTCP
    /// always carries 80 bits, whatever the suite (RFC 4568 6.2.2).
    pub fn rtp_auth_tag_bits(self) -> u32 {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 80,
            SrtpSuite::AesCm128HmacSha1_32 => 32,
        }
    }
}

/// A master key and salt. Never printed: Debug shows only that it is one.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl MasterKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn random() -> MasterKey {
        MasterKey(rand::random())
    }

    pub fn bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.0
    }

    /// As written after `inline:`.
    fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// One usable `a=crypto` line of an offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoOffer {
    pub tag: u32,
    pub suite: SrtpSuite,
    pub key: MasterKey,
}

/// The keys of one negotiated SRTP m-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The offer's tag, echoed in the answer.
    pub tag: u32,
    pub suite: SrtpSuite,
    /// Tutti's key: what it encrypts with, and announces in the answer.
    pub send: MasterKey,
    /// The caller's key: what Tutti decrypts with.
    pub receive: MasterKey,
}

impl SrtpKeys {
    /// Answers an offered line with a key of Tutti's own.
    pub fn answering(offer: CryptoOffer, send: MasterKey) -> SrtpKeys {
        SrtpKeys { tag: offer.tag, suite: offer.suite, send, receive: offer.key }
    }

    /// The value of the answer's `a=crypto` attribute.
    pub fn answer_attribute(&self) -> String {
        format!("{} {} inline:{}", self.tag, self.suite.name(), self.send.to_base64())
    }
}

/// Why an `a=crypto` line cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("a=crypto:{0:?} is not <tag> <suite> inline:<key>")]
    Syntax(String),
    #[error("suite {0} is not supported (AES_CM_128_HMAC_SHA1_80 or AES_CM_128_HMAC_SHA1_32)")]
    UnknownSuite(String),
    #[error("the key is not base64")]
    KeyNotBase64,
    #[error("the key and salt are {0} bytes, not {MASTER_KEY_LEN}")]
    KeyLength(usize),
    #[error("keys with an MKI are not supported")]
    Mki,
    #[error("key lifetime {0} is not supported (Tutti does not re-key; the default or 2^31 to 2^48 packets)")]
    Lifetime(String),
    #[error("session parameter {0} is not supported")]
    SessionParameter(String),
}

/// Smallest key lifetime Tutti accepts: SRTCP's default (RFC 4568 6.2.1).
/// A call would need months at a room system's packet rate to reach it, and
/// Tutti never re-keys, so any lifetime from here to SRTP's default 2^48 is
/// one the defaults already honour.
const MIN_LIFETIME_LOG2: u32 = 31;
const MAX_LIFETIME_LOG2: u32 = 48;

/// Parses the value of one `a=crypto` attribute (after `crypto:`).
pub fn parse_crypto(value: &str) -> Result<CryptoOffer, CryptoError> {
    let syntax = || CryptoError::Syntax(value.to_string());
    let mut fields = value.split_ascii_whitespace();
    let (Some(tag), Some(suite), Some(key_params)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(syntax());
    };
    if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let tag: u32 = tag.parse().map_err(|_| syntax())?;
    let suite = SrtpSuite::from_name(suite).ok_or_else(|| CryptoError::UnknownSuite(suite.to_string()))?;
    // Window size hints only size the replay window; anything else
    // (UNENCRYPTED_SRTP, KDR, FEC_ORDER, ...) changes the packets.
    if let Some(parameter) = fields.find(|p| !p.starts_with("WSH=")) {
        return Err(CryptoError::SessionParameter(parameter.to_string()));
    }
    // Several keys in one line only make sense with MKIs.
    if key_params.contains(';') {
        return Err(CryptoError::Mki);
    }
    let inline = key_params.strip_prefix("inline:").ok_or_else(syntax)?;
    let mut parts = inline.split('|');
    let encoded = parts.next().unwrap_or_default();
    let (mki, lifetimes): (Vec<&str>, Vec<&str>) = parts.partition(|part| part.contains(':'));
    if !mki.is_empty() {
        return Err(CryptoError::Mki);
    }
    lifetimes.into_iter().try_for_each(check_lifetime)?;
    let decoded = BASE64.decode(encoded).map_err(|_| CryptoError::KeyNotBase64)?;
    let key: [u8; MASTER_KEY_LEN] = decoded.as_slice().try_into().map_err(|_| CryptoError::KeyLength(decoded.len()))?;
    Ok(CryptoOffer { tag, suite, key: MasterKey(key) })
}

fn check_lifetime(lifetime: &str) -> Result<(), CryptoError> {
    let refused = || CryptoError::Lifetime(lifetime.to_string());
    let log2 = match lifetime.strip_prefix("2^") {
        Some(exponent) => exponent.parse::<u32>().map_err(|_| refused())?,
        None => {
            let packets = lifetime.parse::<u64>().map_err(|_| refused())?;
            if !packets.is_power_of_two() {
                return Err(refused());
            }
            packets.trailing_zeros()
        }
    };
    if (MIN_LIFETIME_LOG2..=MAX_LIFETIME_LOG2).contains(&log2) { Ok(()) } else { Err(refused()) }
}

/// The first offered line Tutti can honour, or why none is usable.
pub fn choose<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<CryptoOffer, String> {
    let mut refusals = Vec::new();
    for value in values {
        match parse_crypto(value) {
            Ok(offer) => return Ok(offer),
            Err(error) => refusals.push(error.to_string()),
        }
    }
    if refusals.is_empty() {
        Err("RTP/SAVP without a=crypto (Tutti takes SDES keys only, not DTLS-SRTP)".into())
    } else {
        Err(format!("no usable a=crypto ({})", refusals.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "kgy2/FARejpDBwYaeEiCYx5Lo3t7N4c9HkNiQsdd";

    #[test]
    fn a_plain_line_gives_tag_suite_and_key() {
        let offer = parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}")).unwrap();
        assert_eq!(offer.tag, 1);
        assert_eq!(offer.suite, SrtpSuite::AesCm128HmacSha1_80);
        assert_eq!(offer.key.to_base64(), KEY);
        let offer = parse_crypto(&format!("42 AES_CM_128_HMAC_SHA1_32 inline:{KEY}")).unwrap();
        assert_eq!((offer.tag, offer.suite), (42, SrtpSuite::AesCm128HmacSha1_32));
    }

    #[test]
    fn default_range_lifetimes_and_window_hints_are_taken() {
        for line in [
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^31"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^48"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|{}", 1u64 << 40),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} WSH=64"),
        ] {
            assert!(parse_crypto(&line).is_ok(), "{line}");
        }
    }

    #[test]
    fn bad_lines_are_refused_with_their_reason() {
        let cases = [
            (format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4"), CryptoError::Mki),
            (format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1:4"), CryptoError::Mki),
            (format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4;inline:{KEY}|2^20|2:4"), CryptoError::Mki),
            (format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20"), CryptoError::Lifetime("2^20".into())),
            (format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1000"), CryptoError::Lifetime("1000".into())),
            (format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}"), CryptoError::UnknownSuite("AES_256_CM_HMAC_SHA1_80".into())),
            (format!("1 F8_128_HMAC_SHA1_80 inline:{KEY}"), CryptoError::UnknownSuite("F8_128_HMAC_SHA1_80".into())),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64!".into(), CryptoError::KeyNotBase64),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA".into(), CryptoError::KeyLength(3)),
            (format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}AAAA"), CryptoError::KeyLength(33)),
            (format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} UNENCRYPTED_SRTP"), CryptoError::SessionParameter("UNENCRYPTED_SRTP".into())),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_crypto(&line), Err(expected), "{line}");
        }
        for line in ["", "1", "1 AES_CM_128_HMAC_SHA1_80", "x AES_CM_128_HMAC_SHA1_80 inline:a", "1234567890 AES_CM_128_HMAC_SHA1_80 inline:a"] {
            assert!(matches!(parse_crypto(line), Err(CryptoError::Syntax(_))), "{line}");
        }
        assert!(matches!(parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 uri:{KEY}")), Err(CryptoError::Syntax(_))));
    }

    #[test]
    fn the_first_usable_line_is_chosen_and_the_refusals_are_named() {
        let lines = [
            format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}"),
            format!("2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4"),
            format!("3 AES_CM_128_HMAC_SHA1_32 inline:{KEY}"),
            format!("4 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"),
        ];
        let chosen = choose(lines.iter().map(String::as_str)).unwrap();
        assert_eq!((chosen.tag, chosen.suite), (3, SrtpSuite::AesCm128HmacSha1_32));
        let reason = choose(lines[..2].iter().map(String::as_str)).unwrap_err();
        assert!(reason.contains("AES_256_CM_HMAC_SHA1_80 is not supported") && reason.contains("MKI"), "{reason}");
        assert!(choose([]).unwrap_err().contains("without a=crypto"));
    }

    #[test]
    fn the_answer_line_echoes_tag_and_suite_with_tuttis_own_key() {
        let offer = parse_crypto(&format!("7 AES_CM_128_HMAC_SHA1_32 inline:{KEY}")).unwrap();
        let send = MasterKey::random();
        let keys = SrtpKeys::answering(offer, send.clone());
        let line = keys.answer_attribute();
        assert!(line.starts_with("7 AES_CM_128_HMAC_SHA1_32 inline:"), "{line}");
        assert!(!line.contains(KEY), "Tutti's key is its own: {line}");
        let reread = parse_crypto(&line).unwrap();
        assert_eq!(reread.key, send);
        assert_ne!(MasterKey::random(), MasterKey::random());
    }

    #[test]
    fn debug_never_prints_key_material() {
        let offer = parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}")).unwrap();
        let keys = SrtpKeys::answering(offer, MasterKey::random());
        let printed = format!("{keys:?} {:?}", keys.send);
        assert!(!printed.contains(KEY) && !printed.contains(&keys.send.to_base64()), "{printed}");
        assert_eq!(printed.matches("MasterKey(..)").count(), 3, "{printed}");
    }

    #[test]
    fn policies_decline_the_other_kind_of_m_line() {
        assert!(MediaEncryption::Off.refusal(true).unwrap().contains("media_encryption is off"));
        assert!(MediaEncryption::Required.refusal(false).unwrap().contains("media_encryption is required"));
        assert_eq!(MediaEncryption::Optional.refusal(true), None);
        assert_eq!(MediaEncryption::Optional.refusal(false), None);
        assert_eq!("required".parse(), Ok(MediaEncryption::Required));
        assert!("mandatory".parse::<MediaEncryption>().is_err());
    }

    proptest! {
        #[test]
        fn the_parser_never_panics(value in prop_oneof![
            any::<String>(),
            "[0-9]{0,12} (AES_CM_128_HMAC_SHA1_(80|32)|[A-Z_0-9]{0,20}) inline:[A-Za-z0-9+/=]{0,50}(\\|[0-9^:|;]{0,12}){0,3}( [ -~]{0,12}){0,2}",
        ]) {
            let _ = parse_crypto(&value);
        }
    }
}
