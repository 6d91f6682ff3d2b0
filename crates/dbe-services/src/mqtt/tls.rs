//! The `[mqtt] tls` settings turned into a rustls client configuration: certificate files are read here, so
//! every error names the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::tokio_rustls::rustls;

use super::config::TlsConfig;

/// Why the TLS settings could not be turned into a client configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("no usable CA certificate: {0}")]
    Roots(String),
    #[error("client certificate or key rejected: {0}")]
    ClientAuth(rustls::Error),
}

fn read_pem_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsSetupError> {
    let bytes = std::fs::read(path).map_err(|source| TlsSetupError::Read { path: path.into(), source })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut bytes.as_slice()).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// Builds the rustls client configuration from the settings (files are read here, so errors name them).
pub fn tls_client_config(t: &TlsConfig) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    match &t.ca_file {
        Some(path) => {
            for cert in read_pem_certs(path)? {
                roots.add(cert).map_err(|e| TlsSetupError::Roots(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs().map_err(|e| TlsSetupError::Roots(e.to_string()))?;
            let (added, _) = roots.add_parsable_certificates(native);
            if added == 0 {
                return Err(TlsSetupError::Roots("the system has no CA certificates; set mqtt.tls.ca_file".into()));
            }
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match (&t.client_cert_file, &t.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_pem_certs(cert)?;
            let bytes = std::fs::read(key).map_err(|source| TlsSetupError::Read { path: key.clone(), source })?;
            let key_der = rustls_pemfile::private_key(&mut bytes.as_slice())
                .ok()
                .flatten()
                .ok_or_else(|| TlsSetupError::NoKey { path: key.clone() })?;
            builder.with_client_auth_cert(chain, key_der).map_err(TlsSetupError::ClientAuth)?
        }
        _ => builder.with_no_client_auth(),
    };
    if !t.verify {
        config.dangerous().set_certificate_verifier(Arc::new(no_verify::AcceptAnyCert::new()));
    }
    Ok(Arc::new(config))
}

mod no_verify {
    use rumqttc::tokio_rustls::rustls;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    /// Skips the certificate check but still checks the handshake signatures (the session stays encrypted, it
    /// is just not authenticated).
    #[derive(Debug)]
    pub struct AcceptAnyCert(WebPkiSupportedAlgorithms);

    impl AcceptAnyCert {
        pub fn new() -> Self {
            AcceptAnyCert(ring::default_provider().signature_verification_algorithms)
        }
    }

    impl ServerCertVerifier for AcceptAnyCert {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.0)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.0)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tls_files_are_named() {
        let t = TlsConfig { enabled: true, ca_file: Some("/nonexistent/ca.pem".into()), ..TlsConfig::default() };
        let e = tls_client_config(&t).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
