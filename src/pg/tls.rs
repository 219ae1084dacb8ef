//! TLS with libpq's `sslmode` semantics, on rustls.
//!
//! One [`rustls::ClientConfig`] per connection attempt, chosen by sslmode, feeds both the
//! SQL client (through tokio-postgres-rustls) and our replication client:
//!
//! | sslmode | TLS | certificate check |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` | if the server accepts the SSLRequest, else plaintext | none, unless `sslrootcert` is set (then as `verify-ca`) |
//! | `require` | always | none, unless `sslrootcert` is set (then as `verify-ca`, as libpq does) |
//! | `verify-ca` | always | chain to `sslrootcert`, or to the webpki roots; host name not checked |
//! | `verify-full` | always | chain as above, and the host name must be in the certificate |
//!
//! Differences from libpq, on purpose:
//! - `allow` behaves like `prefer`: libpq tries plaintext first and TLS only when the
//!   server refuses; we ask for TLS first, which is never less secure.
//! - When `verify-ca`/`verify-full` have no `sslrootcert`, libpq fails ("root certificate
//!   file does not exist"); we verify against the Mozilla roots bundled by webpki-roots
//!   (libpq's `sslrootcert=system`), because a static container image has no system store.
//! - A handshake that fails under `prefer` is an error; we do not retry in plaintext.
//!
//! Skipping verification still checks the handshake signatures, so the peer must hold the
//! private key of the certificate it presents; only the certificate's trust is skipped.
//!
//! The ALPN protocol `postgresql` is offered, as libpq 17 does; servers before 17 ignore it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::{PgError, SslMode};

/// The ALPN protocol name PostgreSQL 17+ registers for itself.
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The TLS client configuration for `sslmode`, or `None` when TLS is disabled.
///
/// `sslrootcert` is either PEM text (it contains `-----BEGIN`) or the path of a PEM file.
pub fn client_config(sslmode: SslMode, sslrootcert: Option<&str>) -> Result<Option<Arc<ClientConfig>>, PgError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let custom_roots = sslrootcert.map(load_root_certs).transpose()?;

    let verifier: Arc<dyn ServerCertVerifier> = match (sslmode, custom_roots) {
        (SslMode::Disable, _) => return Ok(None),
        (SslMode::Allow | SslMode::Prefer | SslMode::Require, None) => Arc::new(SkipCertificateCheck { algorithms }),
        (SslMode::Allow | SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, roots) => {
            let roots = roots.unwrap_or_else(webpki_root_store);
            Arc::new(SkipHostnameCheck { inner: webpki_verifier(roots, &provider)? })
        }
        (SslMode::VerifyFull, roots) => webpki_verifier(roots.unwrap_or_else(webpki_root_store), &provider)?,
    };

    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| PgError::Protocol(format!("building the TLS configuration: {err}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The name to verify the certificate against (and to send as SNI when it is a DNS name).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, PgError> {
    ServerName::try_from(host.to_string()).map_err(|err| PgError::TlsFailed {
        host: host.to_string(),
        reason: format!("{err}"),
        hint: Some("TLS needs the server address to be a valid DNS name or IP address"),
    })
}

/// Classify a failed handshake.
pub(crate) fn handshake_error(host: &str, sslmode: SslMode, err: &rustls::Error) -> PgError {
    let hint = match err {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => Some(
            "the server certificate is not valid for this host name; connect using a name the \
             certificate lists, or use sslmode \"verify-ca\" to check the chain only",
        ),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            Some(if sslmode == SslMode::VerifyFull || sslmode == SslMode::VerifyCa {
                "the server certificate is not issued by a trusted CA; set sslrootcert to the CA \
             certificate that issued it"
            } else {
                "the server certificate is not issued by the CA in sslrootcert; check sslrootcert, \
             or remove it and use sslmode \"require\" to skip certificate checks"
            })
        }
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => Some("the server certificate has expired or is not valid yet; renew it on the server"),
        _ => None,
    };
    PgError::TlsFailed { host: host.to_string(), reason: err.to_string(), hint }
}

/// The `tls-server-end-point` channel binding data for a server certificate (RFC 5929):
/// its DER hashed with the hash of its signature algorithm (MD5 and SHA-1 become SHA-256).
///
/// `None` when the algorithm has no single hash (Ed25519, RSASSA-PSS), in which case the
/// connection goes on without channel binding, as libpq does.
pub(crate) fn channel_binding_data(end_entity: &[u8]) -> Option<Vec<u8>> {
    let oid = certificate_signature_algorithm(end_entity)?;
    let digest =
        match oid {
            // md5WithRSAEncryption, sha1WithRSAEncryption, sha256WithRSAEncryption
            [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x04 | 0x05 | 0x0B] => Sha256::digest(end_entity).to_vec(),
            // ecdsa-with-SHA1, ecdsa-with-SHA256
            [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x01] | [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02] => {
                Sha256::digest(end_entity).to_vec()
            }
            // sha384WithRSAEncryption, ecdsa-with-SHA384
            [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0C]
            | [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03] => Sha384::digest(end_entity).to_vec(),
            // sha512WithRSAEncryption, ecdsa-with-SHA512
            [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0D]
            | [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x04] => Sha512::digest(end_entity).to_vec(),
            _ => return None,
        };
    Some(digest)
}

/// The DER content of the `signatureAlgorithm` OID of an X.509 certificate:
/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, .. }, .. }`.
fn certificate_signature_algorithm(der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (certificate, _) = der_element(der, SEQUENCE)?;
    let (_tbs_certificate, rest) = der_element(certificate, SEQUENCE)?;
    let (algorithm_identifier, _) = der_element(rest, SEQUENCE)?;
    let (oid, _) = der_element(algorithm_identifier, OID)?;
    Some(oid)
}

/// Split one DER element with the given tag off `input`: `(content, rest)`.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, input) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&length_byte, input) = input.split_first()?;
    let (length, input) = if length_byte < 0x80 {
        (usize::from(length_byte), input)
    } else {
        // Long form: the low bits count the length bytes that follow (at most 4 here).
        let count = usize::from(length_byte & 0x7F);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, input) = input.split_at(count);
        let length = bytes.iter().try_fold(0usize, |acc, &b| acc.checked_mul(256)?.checked_add(usize::from(b)))?;
        (length, input)
    };
    if input.len() < length {
        return None;
    }
    Some(input.split_at(length))
}

fn load_root_certs(sslrootcert: &str) -> Result<RootCertStore, PgError> {
    let invalid = |reason: String| PgError::InvalidRootCert { reason };
    let pem = if sslrootcert.contains("-----BEGIN") {
        sslrootcert.as_bytes().to_vec()
    } else {
        std::fs::read(sslrootcert.trim())
            .map_err(|err| invalid(format!("reading file \"{}\": {err}", sslrootcert.trim())))?
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| invalid(format!("parsing PEM: {err}")))?;
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(invalid(if ignored == 0 {
            "it contains no PEM \"CERTIFICATE\" block".to_string()
        } else {
            format!("none of its {ignored} certificates could be parsed")
        }));
    }
    Ok(store)
}

fn webpki_root_store() -> RootCertStore {
    RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

fn webpki_verifier(roots: RootCertStore, provider: &Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>, PgError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|err| PgError::InvalidRootCert { reason: err.to_string() })
}

/// `require` without a root certificate: trust any certificate, but still verify that the
/// server signed the handshake with the key of the certificate it presented.
#[derive(Debug)]
struct SkipCertificateCheck {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SkipCertificateCheck {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full webpki chain check, minus the host name.
///
/// The webpki verifier checks the chain first and the name last, so a name error means
/// the chain (validity dates, signatures, usage) already passed.
#[derive(Debug)]
struct SkipHostnameCheck {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for SkipHostnameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed EC P-256 certificate (ecdsa-with-SHA256), CN=test-ca.
    const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBezCCASGgAwIBAgIUdZLw0rO/cf+Xe4kFcxeqWeOhzgUwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHdGVzdC1jYTAgFw0yNjExMjIyMzEyMDVaGA8yMTI2MTAyOTIz
MTIwNVowEjEQMA4GA1UEAwwHdGVzdC1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABEhUFmz/8GoLj7U1OdmieF4SjPUrHcbxGkVqggNmyJBD8xzbUexdfXLiKY6q
Zb++ZXYIhlcWZA+aY4TKPEt+TBqjUzBRMB0GA1UdDgQWBBQMRJSwouHVMJXv5NLV
mz7IjcHpZzAfBgNVHSMEGDAWgBQMRJSwouHVMJXv5NLVmz7IjcHpZzAPBgNVHRMB
Af8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQDuD92iDMfCXEtB+F1jmkh7RAyw
b3vYQGsk+h+2vx/PegIgBGbdxsDNUgtBl3Otc9FhzcUKccHgjrEuM8tASNTuuos=
-----END CERTIFICATE-----
";

    fn test_ca_der() -> Vec<u8> {
        CertificateDer::pem_slice_iter(TEST_CA_PEM.as_bytes()).next().unwrap().unwrap().to_vec()
    }

    #[test]
    fn signature_algorithm_is_read_from_the_certificate() {
        let der = test_ca_der();
        let oid = certificate_signature_algorithm(&der).unwrap();
        assert_eq!(oid, [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]);
        let binding = channel_binding_data(&der).unwrap();
        assert_eq!(binding, Sha256::digest(&der).to_vec());
    }

    #[test]
    fn malformed_certificates_have_no_channel_binding() {
        let der = test_ca_der();
        for cut in [0, 1, 2, 5, 40, der.len() - 1] {
            // Truncation breaks the outer length; the walker must notice, not panic.
            assert_eq!(channel_binding_data(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(channel_binding_data(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), None);
        assert_eq!(channel_binding_data(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(channel_binding_data(&[0x30, 0x80]), None);
    }

    #[test]
    fn root_certificates_are_read_from_pem_text_or_a_file() {
        assert!(load_root_certs(TEST_CA_PEM).is_ok());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.crt");
        std::fs::write(&path, TEST_CA_PEM).unwrap();
        assert!(load_root_certs(path.to_str().unwrap()).is_ok());

        let err = load_root_certs(dir.path().join("missing.crt").to_str().unwrap()).unwrap_err();
        assert!(err.to_string().starts_with("invalid sslrootcert: reading file"), "{err}");

        let err = load_root_certs("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap_err();
        assert!(err.to_string().contains("no PEM \"CERTIFICATE\" block"), "{err}");
        assert!(err.hint().is_some());
    }

    #[test]
    fn every_sslmode_but_disable_builds_a_tls_configuration() {
        assert!(client_config(SslMode::Disable, None).unwrap().is_none());
        for mode in [SslMode::Allow, SslMode::Prefer, SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            let config = client_config(mode, None).unwrap().unwrap();
            assert_eq!(config.alpn_protocols, vec![b"postgresql".to_vec()]);
            assert!(client_config(mode, Some(TEST_CA_PEM)).unwrap().is_some());
        }
    }

    #[test]
    fn server_names_accept_dns_names_and_ip_addresses() {
        assert!(matches!(server_name("db.example.com").unwrap(), ServerName::DnsName(_)));
        assert!(matches!(server_name("127.0.0.1").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("::1").unwrap(), ServerName::IpAddress(_)));
        assert!(server_name("bad name").is_err());
    }
}
