//! Turns the web configuration's `tls_server_config` into a rustls server configuration:
//! certificate chain and key, the client-certificate policy with its CA, allowed client SANs,
//! protocol versions, cipher suites and curves. rustls with the ring provider keeps `make
//! static` a single static binary (no OpenSSL to link).

use crate::web_config::{ClientAuth, TlsSettings, TlsVersion};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// Builds the server configuration; errors say which part is wrong, never a key's bytes.
pub fn server_config(s: &TlsSettings) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(provider(s)?);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&s.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the server certificate is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("the server certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&s.key_pem)
        .map_err(|_| "the server key file holds no usable private key (PEM, PKCS#8, RSA or EC)")?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| s.min_version.is_none_or(|m| *v >= m) && s.max_version.is_none_or(|m| *v <= m))
    .map(|(_, p)| p)
    .collect();
    if versions.is_empty() {
        return Err("min_version is above max_version".into());
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS settings: {e}"))?;
    let verifier = client_verifier(s, &provider)?;
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("the server certificate and key do not fit: {e}"))?;
    config.ignore_client_order = s.prefer_server_cipher_suites;
    // Remote write is HTTP/1.1; offering only it keeps clients from trying HTTP/2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// ring's provider, narrowed to the configured cipher suites and curves (Go's names).
fn provider(s: &TlsSettings) -> Result<CryptoProvider, String> {
    // rustls 0.23.48 deprecates ring's provider for lacking post-quantum key exchange; ring
    // is kept because aws-lc-rs (the alternative) needs cmake and a C build that complicates
    // the static binary. Classical X25519/P-256/P-384 remain secure today.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    if !s.cipher_suites.is_empty() {
        let wanted: Vec<String> = s.cipher_suites.iter().map(|n| go_suite_name(n)).collect();
        for name in &wanted {
            if !provider
                .cipher_suites
                .iter()
                .any(|c| suite_name(c) == *name)
            {
                return Err(format!(
                    "cipher suite {name} is not offered (TLS 1.2 suites offered: ECDHE with AES-GCM or ChaCha20-Poly1305)"
                ));
            }
        }
        // TLS 1.3 suites are not configurable, as in Go.
        provider
            .cipher_suites
            .retain(|c| c.version() == &rustls::version::TLS13 || wanted.contains(&suite_name(c)));
    }
    if !s.curve_preferences.is_empty() {
        let mut groups = Vec::new();
        for name in &s.curve_preferences {
            let wanted = match name.as_str() {
                "X25519" => rustls::NamedGroup::X25519,
                "CurveP256" | "P256" => rustls::NamedGroup::secp256r1,
                "CurveP384" | "P384" => rustls::NamedGroup::secp384r1,
                other => {
                    return Err(format!(
                        "curve {other} is not offered (X25519, CurveP256, CurveP384)"
                    ))
                }
            };
            if let Some(g) = provider.kx_groups.iter().find(|g| g.name() == wanted) {
                groups.push(*g);
            }
        }
        provider.kx_groups = groups;
    }
    Ok(provider)
}

fn suite_name(c: &rustls::SupportedCipherSuite) -> String {
    format!("{:?}", c.suite())
}

/// Go spells the ChaCha20 suites without the trailing `_SHA256` too.
fn go_suite_name(name: &str) -> String {
    if name.ends_with("CHACHA20_POLY1305") {
        format!("{name}_SHA256")
    } else {
        name.to_string()
    }
}

fn client_verifier(
    s: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let roots = match &s.client_ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("client_ca_file is not valid PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("client_ca_file holds an unusable certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("client_ca_file holds no certificate".into());
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let webpki = |roots: Arc<RootCertStore>, optional: bool| {
        let b = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
        let b = if optional {
            b.allow_unauthenticated()
        } else {
            b
        };
        b.build()
            .map_err(|e| format!("client certificate verification: {e}"))
    };
    let inner: Arc<dyn ClientCertVerifier> = match (s.client_auth, roots) {
        (ClientAuth::NoClientCert, _) => {
            if !s.client_allowed_sans.is_empty() {
                return Err("client_allowed_sans needs a client_auth_type that verifies".into());
            }
            return Ok(WebPkiClientVerifier::no_client_auth());
        }
        (ClientAuth::VerifyClientCertIfGiven, Some(r)) => webpki(r, true)?,
        (ClientAuth::RequireAndVerifyClientCert, Some(r)) => webpki(r, false)?,
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, None) => {
            return Err("client_auth_type needs client_ca_file".into())
        }
        (ClientAuth::RequestClientCert, _) => Arc::new(AnyClientCert {
            mandatory: false,
            provider: provider.clone(),
        }),
        (ClientAuth::RequireAnyClientCert, _) => Arc::new(AnyClientCert {
            mandatory: true,
            provider: provider.clone(),
        }),
    };
    if s.client_allowed_sans.is_empty() {
        return Ok(inner);
    }
    // A SAN means something only on a verified certificate that every client must show.
    if s.client_auth != ClientAuth::RequireAndVerifyClientCert {
        return Err("client_allowed_sans needs client_auth_type RequireAndVerifyClientCert".into());
    }
    let mut sans = Vec::new();
    for san in &s.client_allowed_sans {
        sans.push(
            ServerName::try_from(san.clone())
                .map_err(|_| format!("client_allowed_sans: {san:?} is not a DNS name or IP"))?,
        );
    }
    Ok(Arc::new(AllowedSans { inner, sans }))
}

/// `RequestClientCert` / `RequireAnyClientCert`: a certificate is asked for (or required) but
/// not verified against a CA, as in Go; the handshake signature still proves the client holds
/// its key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether `cert` names `san` itself: a wildcard certificate (`*.example.com`) does not
/// count for `prometheus.example.com`, as in the exporter-toolkit, which compares exactly.
/// webpki matches names by server rules (wildcards included), so a certificate that is also
/// valid for a made-up sibling of `san` is a wildcard one.
fn names_exactly(cert: &webpki::EndEntityCert<'_>, san: &ServerName<'static>) -> bool {
    if cert.verify_is_valid_for_subject_name(san).is_err() {
        return false;
    }
    let ServerName::DnsName(dns) = san else {
        return true; // IP addresses have no wildcards
    };
    let Some((_, parent)) = dns.as_ref().split_once('.') else {
        return true;
    };
    match ServerName::try_from(format!("promgres-wildcard-probe.{parent}")) {
        Ok(probe) => cert.verify_is_valid_for_subject_name(&probe).is_err(),
        Err(_) => true,
    }
}

/// `client_allowed_sans`: after the inner verifier, the certificate must name one of these
/// (DNS names and IP addresses).
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<ServerName<'static>>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if self.sans.iter().any(|san| names_exactly(&cert, san)) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
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
