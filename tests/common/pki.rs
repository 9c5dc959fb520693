//! A certificate authority made at run time (rcgen), and the server
//! certificates RTMPS tests present through nginx: good, expired, for
//! another name, or from another CA.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd};

/// The names every "good" server certificate is issued for: what tests dial.
pub const SERVER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A test CA; its certificate goes in `--rtmps-ca-file`.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// Whether a server certificate is within its validity period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    Current,
    /// Valid during 2020 only.
    Expired,
}

/// A certificate and its private key as PEM files, ready for nginx.
#[derive(Clone, Debug)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(common_name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to check");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a P-256 key"))
            .expect("a self-signed CA certificate");
        TestCa { issuer }
    }

    /// Writes the CA certificate (PEM) to `path`.
    pub fn write_certificate(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.issuer.pem()).expect("writing the CA certificate");
        path.to_path_buf()
    }

    /// Issues a server certificate for `names`, written as `{dir}/{stem}.crt` and `.key`.
    pub fn issue(&self, dir: &Path, stem: &str, names: &[&str], validity: Validity) -> CertificateFiles {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("valid server names");
        params.distinguished_name.push(DnType::CommonName, stem);
        if validity == Validity::Expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("a P-256 key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing a server certificate");
        let files = CertificateFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("writing a server certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("writing a server key");
        files
    }
}
