//! Digest authentication (RFC 3261 §22, RFC 8760) for callers outside the
//! trusted networks: a softphone or a room system that is not behind a
//! trusted PBX proves a configured user's password before it joins.
//!
//! Nonces are stateless: the time they were issued and an HMAC of it under
//! a secret of this process, so a node keeps no table of challenges and a
//! nonce older than [`NONCE_LIFETIME`] is answered with a fresh challenge
//! (`stale=true`) rather than a refusal.

use hmac::{Hmac, Mac};
use rsipstack::sip::headers::auth::Algorithm;
use rsipstack::sip::headers::typed::Authorization;
use rsipstack::sip::{DigestGenerator, Header, HeadersExt, Request, headers};
use sha2::Sha256;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

pub const REALM: &str = "tutti";
const NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// The users who may call from anywhere, by name, with their passwords.
pub struct Users {
    passwords: HashMap<String, String>,
    secret: [u8; 32],
}

/// What an INVITE's credentials are worth.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// A configured user's right password: take the call.
    Authorized(String),
    /// No credentials, or credentials under a nonce too old: challenge (again).
    Challenge { stale: bool },
    /// A wrong password, an unknown user or a forged nonce: 403.
    Refused,
}

impl Users {
    pub fn new(credentials: &[(String, String)]) -> Users {
        Users { passwords: credentials.iter().cloned().collect(), secret: rand::random() }
    }

    pub fn is_empty(&self) -> bool {
        self.passwords.is_empty()
    }

    /// `WWW-Authenticate` for a 401: MD5, then SHA-256 (RFC 8760). MD5
    /// first, though RFC 8760 would put its preference on top: the legacy
    /// endpoints Tutti is for (and SIPp) answer the first challenge whatever
    /// its algorithm, and fail on SHA-256. A client that picks the strongest
    /// it knows still gets SHA-256.
    pub fn challenge(&self, stale: bool, now: SystemTime) -> Vec<Header> {
        let nonce = self.nonce(seconds(now));
        let stale = if stale { ", stale=true" } else { "" };
        ["MD5", "SHA-256"]
            .iter()
            .map(|algorithm| {
                let value = format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm={algorithm}, qop=\"auth\"{stale}");
                headers::WwwAuthenticate::from(value).into()
            })
            .collect()
    }

    pub fn check(&self, request: &Request, now: SystemTime) -> Check {
        let Some(credentials) = request.header_value("Authorization") else {
            return Check::Challenge { stale: false };
        };
        let Ok(authorization) = Authorization::parse(&rsipstack_spelling(&credentials)) else {
            return Check::Refused;
        };
        let (Some(password), true) = (self.passwords.get(&authorization.username), authorization.realm == REALM) else {
            return Check::Refused;
        };
        let Some(issued) = self.issued(&authorization.nonce) else {
            return Check::Refused;
        };
        if !matches!(authorization.algorithm.unwrap_or(Algorithm::Md5), Algorithm::Md5 | Algorithm::Sha256) {
            return Check::Refused;
        }
        let expected = DigestGenerator::from(&authorization, password, &request.method).compute();
        if !bool::from(expected.as_bytes().ct_eq(authorization.response.to_ascii_lowercase().as_bytes())) {
            return Check::Refused;
        }
        if seconds(now).saturating_sub(issued) > NONCE_LIFETIME.as_secs() {
            return Check::Challenge { stale: true };
        }
        Check::Authorized(authorization.username)
    }

    fn nonce(&self, issued: u64) -> String {
        format!("{issued:x}.{}", self.seal(issued))
    }

    /// When a nonce of ours was issued; `None` for one we did not make.
    fn issued(&self, nonce: &str) -> Option<u64> {
        let (time, seal) = nonce.split_once('.')?;
        let issued = u64::from_str_radix(time, 16).ok()?;
        bool::from(self.seal(issued).as_bytes().ct_eq(seal.as_bytes())).then_some(issued)
    }

    fn seal(&self, issued: u64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(&issued.to_be_bytes());
        mac.finalize().into_bytes()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// rsipstack 0.7 reads the algorithm as `SHA256`, not RFC 8760's `SHA-256`.
fn rsipstack_spelling(credentials: &str) -> String {
    let lower = credentials.to_ascii_lowercase();
    match lower.find("algorithm=sha-256") {
        Some(at) => {
            let name = at + "algorithm=".len();
            format!("{}SHA256{}", &credentials[..name], &credentials[name + "SHA-256".len()..])
        }
        None => credentials.to_string(),
    }
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::sip::Method;

    fn users() -> Users {
        Users::new(&[("alice".into(), "wonderland".into())])
    }

    /// What a client computes for `nonce`, as an INVITE with an Authorization header.
    fn invite(user: &str, password: &str, nonce: &str, algorithm: &str) -> Request {
        let bare = |authorization: &str| {
            Request::try_from(format!(
                "INVITE sip:room@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\nFrom: <sip:{user}@x>;tag=1\r\n\
                 To: <sip:room@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 2 INVITE\r\n{authorization}Content-Length: 0\r\n\r\n"
            ))
            .unwrap()
        };
        let header = |response: &str| {
            format!(
                "Authorization: Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"sip:room@127.0.0.1\", \
                 response=\"{response}\", algorithm={algorithm}, qop=auth, nc=00000001, cnonce=\"abc\"\r\n"
            )
        };
        let parsed = Authorization::parse(&rsipstack_spelling(header("0").trim_start_matches("Authorization: ").trim_end())).unwrap();
        let response = DigestGenerator::from(&parsed, password, &Method::Invite).compute();
        bare(&header(&response))
    }

    fn nonce_of(challenge: &[Header]) -> String {
        let text = challenge[0].to_string();
        text.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap().to_string()
    }

    #[test]
    fn no_credentials_are_challenged_with_md5_then_sha256() {
        let users = users();
        let now = SystemTime::now();
        let without = Request::try_from(
            "INVITE sip:room@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:room@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(users.check(&without, now), Check::Challenge { stale: false });
        let challenge = users.challenge(false, now);
        let lines: Vec<String> = challenge.iter().map(|h| h.to_string()).collect();
        assert!(lines[0].contains("algorithm=MD5") && lines[1].contains("algorithm=SHA-256"), "{lines:?}");
        assert!(lines.iter().all(|l| l.starts_with("WWW-Authenticate: Digest realm=\"tutti\"")));
    }

    #[test]
    fn the_right_password_is_taken_with_either_algorithm() {
        let users = users();
        let now = SystemTime::now();
        let nonce = nonce_of(&users.challenge(false, now));
        assert_eq!(users.check(&invite("alice", "wonderland", &nonce, "MD5"), now), Check::Authorized("alice".into()));
        assert_eq!(users.check(&invite("alice", "wonderland", &nonce, "SHA-256"), now), Check::Authorized("alice".into()));
    }

    #[test]
    fn a_wrong_password_an_unknown_user_or_a_forged_nonce_is_refused() {
        let users = users();
        let now = SystemTime::now();
        let nonce = nonce_of(&users.challenge(false, now));
        assert_eq!(users.check(&invite("alice", "looking-glass", &nonce, "MD5"), now), Check::Refused);
        assert_eq!(users.check(&invite("bob", "wonderland", &nonce, "MD5"), now), Check::Refused);
        let forged = format!("{}.{}", nonce.split('.').next().unwrap(), "0".repeat(32));
        assert_eq!(users.check(&invite("alice", "wonderland", &forged, "MD5"), now), Check::Refused);
        // Another process's nonce (another secret) is not ours either.
        assert_eq!(Users::new(&[("alice".into(), "wonderland".into())]).check(&invite("alice", "wonderland", &nonce, "MD5"), now), Check::Refused);
    }

    #[test]
    fn an_old_nonce_is_challenged_again_as_stale() {
        let users = users();
        let then = SystemTime::now() - NONCE_LIFETIME - Duration::from_secs(1);
        let nonce = nonce_of(&users.challenge(false, then));
        assert_eq!(users.check(&invite("alice", "wonderland", &nonce, "MD5"), SystemTime::now()), Check::Challenge { stale: true });
        assert!(users.challenge(true, SystemTime::now())[0].to_string().ends_with("stale=true"));
    }
}
