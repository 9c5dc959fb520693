//! Whom an `rtmps://` destination may show a certificate from, decided once
//! at start-up, and what a rejected certificate means in an operator's words.
//!
//! Three sources of trust anchors, in one store:
//! - the Mozilla roots bundled in the binary (`webpki-roots`), so public CDNs
//!   work even in a container without a CA store;
//! - the system store (`rustls-native-certs`: `/etc/ssl/certs` on Debian, or
//!   `SSL_CERT_FILE`/`SSL_CERT_DIR`), where an organisation installs its own CA
//!   with `update-ca-certificates`. Read through the crate rather than by hand
//!   because it knows each distribution's paths and honours the variables
//!   operators already use for curl and openssl. A missing or partly
//!   unreadable system store is logged, not fatal: the other two sources
//!   still work;
//! - an operator's CA bundle (`--rtmps-ca-file`, PEM, one or more
//!   certificates) for an origin behind a private CA. Every certificate in it
//!   must be usable, or start-up fails: a typo there would otherwise surface
//!   only as "unknown issuer" at the first publish.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::{self, CertificateError, RootCertStore};

/// The TLS client configuration every RTMPS publisher shares. Cheap to clone.
#[derive(Clone)]
pub struct RtmpsTrust {
    client: Arc<rustls::ClientConfig>,
    sources: TrustSources,
}

/// How many trust anchors each source gave, for the start-up log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrustSources {
    pub bundled: usize,
    pub system: usize,
    pub operator: usize,
}

#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read the RTMPS CA file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the RTMPS CA file {} is not valid PEM: {source}", path.display())]
    Pem { path: PathBuf, source: pem::Error },
    #[error("the RTMPS CA file {} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")", path.display())]
    NoCertificate { path: PathBuf },
    #[error("certificate {number} in the RTMPS CA file {} cannot be a trust anchor: {source}", path.display())]
    Unusable {
        path: PathBuf,
        /// Counted from 1, in file order.
        number: usize,
        source: rustls::Error,
    },
}

impl RtmpsTrust {
    /// Mozilla roots + the system store + the certificates in `operator_ca_file`.
    pub fn load(operator_ca_file: Option<&Path>) -> Result<RtmpsTrust, TrustError> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let mut sources = TrustSources {
            bundled: roots.len(),
            ..TrustSources::default()
        };
        let system = rustls_native_certs::load_native_certs();
        for error in &system.errors {
            tracing::warn!(%error, "part of the system CA store could not be read; RTMPS trusts the rest");
        }
        let (added, ignored) = roots.add_parsable_certificates(system.certs);
        if ignored > 0 {
            tracing::warn!(
                ignored,
                "certificates of the system CA store that are not usable as trust anchors"
            );
        }
        sources.system = added;
        if let Some(path) = operator_ca_file {
            for (index, certificate) in read_pem_certificates(path)?.into_iter().enumerate() {
                roots.add(certificate).map_err(|source| TrustError::Unusable {
                    path: path.to_path_buf(),
                    number: index + 1,
                    source,
                })?;
                sources.operator += 1;
            }
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports rustls' default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(RtmpsTrust {
            client: Arc::new(client),
            sources,
        })
    }

    pub fn sources(&self) -> TrustSources {
        self.sources
    }

    pub(super) fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }
}

impl fmt::Debug for RtmpsTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RtmpsTrust").field(&self.sources).finish()
    }
}

fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let bytes = std::fs::read(path).map_err(|source| TrustError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TrustError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(TrustError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certificates)
}

/// Why a server's certificate was rejected. Retrying shows the same
/// certificate again, so the fix is the operator's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateProblem {
    /// `not_after` in Unix seconds, when rustls reports it.
    Expired {
        not_after: Option<u64>,
    },
    NotValidYet {
        not_before: Option<u64>,
    },
    UnknownIssuer,
    /// Issued for other names; `presented` lists them when known.
    WrongName {
        presented: Vec<String>,
    },
    Revoked,
    /// Anything rarer, in rustls' words.
    Other(String),
}

impl From<&CertificateError> for CertificateProblem {
    fn from(error: &CertificateError) -> CertificateProblem {
        match error {
            CertificateError::Expired => CertificateProblem::Expired { not_after: None },
            CertificateError::ExpiredContext { not_after, .. } => CertificateProblem::Expired {
                not_after: Some(not_after.as_secs()),
            },
            CertificateError::NotValidYet => CertificateProblem::NotValidYet { not_before: None },
            CertificateError::NotValidYetContext { not_before, .. } => CertificateProblem::NotValidYet {
                not_before: Some(not_before.as_secs()),
            },
            CertificateError::UnknownIssuer => CertificateProblem::UnknownIssuer,
            CertificateError::NotValidForName => CertificateProblem::WrongName { presented: Vec::new() },
            CertificateError::NotValidForNameContext { presented, .. } => CertificateProblem::WrongName {
                presented: presented.iter().map(|name| plain_name(name)).collect(),
            },
            CertificateError::Revoked => CertificateProblem::Revoked,
            other => CertificateProblem::Other(other.to_string()),
        }
    }
}

/// `live.example.com` from webpki's `DnsName("live.example.com")`, and
/// `192.0.2.1` from `IpAddress(192.0.2.1)`; other kinds of name as given.
fn plain_name(presented: &str) -> String {
    let inner = presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        });
    inner.unwrap_or(presented).to_string()
}

impl fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertificateProblem::Expired { not_after: Some(at) } => write!(f, "expired at {}", utc(*at)),
            CertificateProblem::Expired { not_after: None } => f.write_str("expired"),
            CertificateProblem::NotValidYet { not_before: Some(at) } => write!(f, "not valid before {}", utc(*at)),
            CertificateProblem::NotValidYet { not_before: None } => f.write_str("not valid yet"),
            CertificateProblem::UnknownIssuer => f.write_str(
                "unknown issuer (signed by a CA that is neither a Mozilla root, in the system store, \
                 nor in --rtmps-ca-file)",
            ),
            CertificateProblem::WrongName { presented } if presented.is_empty() => {
                f.write_str("issued for another name")
            }
            CertificateProblem::WrongName { presented } => {
                write!(f, "issued for another name ({})", presented.join(", "))
            }
            CertificateProblem::Revoked => f.write_str("revoked"),
            CertificateProblem::Other(words) => f.write_str(words),
        }
    }
}

/// RFC 3339 in UTC, or the raw seconds if out of `time`'s range.
fn utc(unix_seconds: u64) -> String {
    i64::try_from(unix_seconds)
        .ok()
        .and_then(|seconds| OffsetDateTime::from_unix_timestamp(seconds).ok())
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{unix_seconds} s after 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio_rustls::rustls::pki_types::UnixTime;

    /// Valid PEM and base64, but the DER inside stops after a few fields.
    const CUT_SHORT_CERTIFICATE_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBfjCCASOgAwIBAgIUYwMMYRd7O1E0mXlxr71QbH2HdCEwCgYIKoZIzj0EAwIw
-----END CERTIFICATE-----
";

    fn ca_pem(name: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
    }

    fn file_with(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    #[test]
    fn without_an_operator_file_the_bundled_roots_are_trusted() {
        let trust = RtmpsTrust::load(None).unwrap();
        assert_eq!(trust.sources().bundled, webpki_roots::TLS_SERVER_ROOTS.len());
        assert_eq!(trust.sources().operator, 0);
    }

    #[test]
    fn a_missing_ca_file_is_an_error_naming_it() {
        let error = RtmpsTrust::load(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(matches!(error, TrustError::Read { .. }), "{error}");
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn a_file_without_pem_certificates_is_an_error() {
        let file = file_with("just some text\n");
        let error = RtmpsTrust::load(Some(file.path())).unwrap_err();
        assert!(matches!(error, TrustError::NoCertificate { .. }), "{error}");
    }

    #[test]
    fn a_truncated_pem_section_is_an_error() {
        let file = file_with("-----BEGIN CERTIFICATE-----\nMIIB\n");
        let error = RtmpsTrust::load(Some(file.path())).unwrap_err();
        assert!(matches!(error, TrustError::Pem { .. }), "{error}");
    }

    #[test]
    fn every_certificate_of_an_operator_bundle_is_trusted() {
        let file = file_with(&format!("{}{}", ca_pem("first CA"), ca_pem("second CA")));
        let trust = RtmpsTrust::load(Some(file.path())).unwrap();
        assert_eq!(trust.sources().operator, 2);
    }

    #[test]
    fn a_certificate_that_does_not_parse_is_an_error_with_its_number() {
        let file = file_with(&format!("{}{CUT_SHORT_CERTIFICATE_PEM}", ca_pem("good CA")));
        let error = RtmpsTrust::load(Some(file.path())).unwrap_err();
        assert!(matches!(error, TrustError::Unusable { number: 2, .. }), "{error}");
    }

    #[test]
    fn certificate_problems_read_as_an_operator_would_say_them() {
        let expired = CertificateProblem::from(&CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000)),
            not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_600_000_000)),
        });
        assert_eq!(expired.to_string(), "expired at 2020-09-13T12:26:40Z");
        assert_eq!(
            CertificateProblem::from(&CertificateError::Expired).to_string(),
            "expired"
        );
        assert!(
            CertificateProblem::from(&CertificateError::UnknownIssuer)
                .to_string()
                .starts_with("unknown issuer")
        );
        let wrong_name = CertificateProblem::from(&CertificateError::NotValidForNameContext {
            expected: rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            presented: vec!["DnsName(\"live.example.com\")".into(), "IpAddress(192.0.2.1)".into()],
        });
        assert_eq!(
            wrong_name.to_string(),
            "issued for another name (live.example.com, 192.0.2.1)"
        );
        assert_eq!(
            CertificateProblem::from(&CertificateError::NotValidForName),
            CertificateProblem::WrongName { presented: Vec::new() }
        );
    }
}
