//! A self-signed certificate for `localhost` / `127.0.0.1`, as files for nats-server and
//! as the pieces a rustls server and a reqwest client need.

#![allow(dead_code)]

use std::path::PathBuf;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::TempDir;

/// The certificate, its key, and the PEM files written for nats-server.
pub struct SelfSigned {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// The directory holding `cert.pem` and `key.pem`.
    pub dir: TempDir,
}

impl SelfSigned {
    /// A fresh certificate for `localhost` and `127.0.0.1`.
    pub fn generate() -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("generate a self-signed certificate");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cert_pem = certified.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &cert_pem).expect("write cert.pem");
        std::fs::write(dir.path().join("key.pem"), certified.key_pair.serialize_pem()).expect("write key.pem");
        Self { cert_pem, cert_der: certified.cert.der().clone(), key_der: certified.key_pair.serialize_der(), dir }
    }

    /// `cert.pem`.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// `key.pem`.
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// The nats-server configuration block requiring TLS with this certificate.
    pub fn nats_tls_block(&self) -> String {
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
            self.cert_path().display(),
            self.key_path().display()
        )
    }

    /// A rustls server configuration presenting this certificate (uses the process
    /// default crypto provider).
    pub fn server_config(&self) -> rustls::ServerConfig {
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .expect("a server configuration for the certificate")
    }
}
