//! TLS for the PostgreSQL sessions: libpq's `sslmode` and `sslrootcert` in `--db-uri`, the
//! connector they pick (rustls with the ring provider, through `tokio-postgres-rustls`), and
//! [`DbConfig::connect`], the one place every promgres session is opened.
//!
//! rust-postgres's own parser knows `sslmode` `disable`, `prefer` and `require` only, and no
//! `sslrootcert`, so [`DbConfig::parse`] takes those two parameters out of the connection
//! string (URI or `key=value` form) and hands it the rest. The modes mean what they mean to
//! libpq:
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | not given | no (as before; libpq would try it) | - |
//! | `disable` | no | - |
//! | `prefer` | tried; plain text if the server has no TLS | not checked |
//! | `require` | yes | not checked |
//! | `verify-ca` | yes | chain to `sslrootcert`; the host name is not checked |
//! | `verify-full` | yes | chain to `sslrootcert`, and it must name the host |
//!
//! As in libpq, `prefer` and `require` with an `sslrootcert` check the chain like
//! `verify-ca` (an `sslrootcert` without `sslmode` is `prefer` with that check), and
//! `sslrootcert=system` (the system's CA store) needs `verify-full`, which is
//! also what it implies without an `sslmode`. Unlike libpq, the verify modes need an
//! `sslrootcert`: there is no default `~/.postgresql/root.crt`. PostgreSQL never encrypts a
//! Unix-domain socket; such hosts connect in plain text whatever the mode, as with libpq.

use crate::db_error::StoreError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values that promgres supports (`allow` is not one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported: use disable, prefer, require, \
                            verify-ca or verify-full"
                        .into(),
                )
            }
            other => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
    /// `sslrootcert=system`: the system's CA store (`SSL_CERT_FILE`, `SSL_CERT_DIR` or the
    /// distribution's bundle).
    System,
}

impl fmt::Display for RootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootCert::File(path) => write!(f, "{}", path.display()),
            RootCert::System => f.write_str("system"),
        }
    }
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Not at all: the session is encrypted, but the server is not authenticated.
    Nothing,
    /// The chain must end at a trusted CA; any host name.
    Chain,
    /// The chain, and the certificate must name the host connected to.
    Full,
}

/// The TLS side of a [`DbConfig`]: what was asked for, and the connector it makes.
#[derive(Clone)]
struct Tls {
    /// The `sslmode` given, if any.
    mode: Option<SslMode>,
    /// The mode in force (`prefer` when none was given, `verify-full` for
    /// `sslrootcert=system`), for messages.
    effective: SslMode,
    root: Option<RootCert>,
    /// None: no TLS (rust-postgres's `NoTls`).
    connector: Option<(Verify, MakeRustlsConnect)>,
}

/// A database's connection settings: what rust-postgres understands (reached through `Deref`,
/// so `db.dbname(..)`, `db.get_hosts()` work as on a `postgres::Config`), plus how TLS is done.
///
/// A plain `postgres::Config` converts into one without TLS, which is what promgres did before
/// it spoke TLS; [`DbConfig::parse`] is the way to a TLS session.
#[derive(Clone)]
pub struct DbConfig {
    pg: postgres::Config,
    tls: Tls,
}

impl From<postgres::Config> for DbConfig {
    fn from(pg: postgres::Config) -> Self {
        DbConfig {
            pg,
            tls: Tls {
                mode: None,
                effective: SslMode::Prefer,
                root: None,
                connector: None,
            },
        }
    }
}

/// What the functions that open sessions take: a [`DbConfig`], or a plain `postgres::Config`
/// (no TLS, as before promgres spoke TLS).
pub trait ToDbConfig {
    fn to_db_config(&self) -> DbConfig;
}

impl ToDbConfig for DbConfig {
    fn to_db_config(&self) -> DbConfig {
        self.clone()
    }
}

impl ToDbConfig for postgres::Config {
    fn to_db_config(&self) -> DbConfig {
        self.clone().into()
    }
}

impl std::ops::Deref for DbConfig {
    type Target = postgres::Config;
    fn deref(&self) -> &postgres::Config {
        &self.pg
    }
}

impl std::ops::DerefMut for DbConfig {
    fn deref_mut(&mut self) -> &mut postgres::Config {
        &mut self.pg
    }
}

impl fmt::Debug for DbConfig {
    // postgres::Config's Debug redacts the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("pg", &self.pg)
            .field("sslmode", &self.tls.mode)
            .field("sslrootcert", &self.tls.root)
            .field("verify", &self.verify())
            .finish()
    }
}

impl std::str::FromStr for DbConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<DbConfig, String> {
        DbConfig::parse(s)
    }
}

impl DbConfig {
    /// Parses a libpq connection string (URI or `key=value` words), loading `sslrootcert`.
    /// Errors name the parameter or file at fault, never the string (it may hold a password).
    pub fn parse(s: &str) -> Result<DbConfig, String> {
        let (rest, params) = take_tls_params(s)?;
        let mut pg: postgres::Config = rest
            .parse()
            .map_err(|e| format!("not a valid PostgreSQL connection string: {e}"))?;
        let mode = params.sslmode.as_deref().map(SslMode::parse).transpose()?;
        let root = match params.sslrootcert.as_deref() {
            None | Some("") => None,
            Some("system") => Some(RootCert::System),
            Some(path) => Some(RootCert::File(PathBuf::from(path))),
        };
        if root == Some(RootCert::System) && !matches!(mode, None | Some(SslMode::VerifyFull)) {
            return Err(format!(
                "sslrootcert=system needs sslmode=verify-full, not {}",
                mode.map_or("", SslMode::as_str)
            ));
        }
        let mode_or_system = match (&root, mode) {
            (Some(RootCert::System), None) => Some(SslMode::VerifyFull),
            _ => mode,
        };
        // (TLS mode of rust-postgres, verification); None: no TLS.
        let plan = match (mode_or_system, &root) {
            (None, None) | (Some(SslMode::Disable), _) => None,
            (None | Some(SslMode::Prefer), Some(_)) => {
                Some((postgres::config::SslMode::Prefer, Verify::Chain))
            }
            (Some(SslMode::Prefer), None) => {
                Some((postgres::config::SslMode::Prefer, Verify::Nothing))
            }
            (Some(SslMode::Require), None) => {
                Some((postgres::config::SslMode::Require, Verify::Nothing))
            }
            (Some(SslMode::Require | SslMode::VerifyCa), Some(_)) => {
                Some((postgres::config::SslMode::Require, Verify::Chain))
            }
            (Some(SslMode::VerifyFull), Some(_)) => {
                Some((postgres::config::SslMode::Require, Verify::Full))
            }
            (Some(m @ (SslMode::VerifyCa | SslMode::VerifyFull)), None) => {
                return Err(format!(
                    "sslmode={} needs sslrootcert: the file of the CA certificate(s) that \
                     signed the server's certificate, or sslrootcert=system",
                    m.as_str()
                ))
            }
        };
        let unix = pg
            .get_hosts()
            .iter()
            .filter(|h| !matches!(h, postgres::config::Host::Tcp(_)))
            .count();
        let plan = match plan {
            // PostgreSQL never encrypts a Unix-domain socket; libpq connects in plain text.
            Some(_) if unix > 0 && unix == pg.get_hosts().len() => None,
            Some((_, _)) if unix > 0 => {
                return Err(format!(
                    "sslmode={}: the hosts mix Unix-domain sockets (never encrypted) and TCP; \
                     give TCP hosts only, or sslmode=disable",
                    mode_or_system.map_or("prefer", SslMode::as_str)
                ))
            }
            plan => plan,
        };
        let connector = match plan {
            None => {
                // Without an sslmode, rust-postgres's default `prefer` with no TLS connector:
                // plain text, as before.
                if mode.is_some() {
                    pg.ssl_mode(postgres::config::SslMode::Disable);
                }
                None
            }
            Some((pg_mode, verify)) => {
                pg.ssl_mode(pg_mode);
                // With hostaddr alone, the address is the name TLS checks (as in libpq).
                if pg.get_hosts().is_empty() {
                    for addr in pg.get_hostaddrs().to_vec() {
                        pg.host(&addr.to_string());
                    }
                }
                let roots = match (&root, verify) {
                    (_, Verify::Nothing) | (None, _) => None,
                    (Some(root), _) => Some(load_roots(root)?),
                };
                let config = client_config(verify, roots)?;
                Some((verify, MakeRustlsConnect::new(config)))
            }
        };
        Ok(DbConfig {
            pg,
            tls: Tls {
                mode,
                effective: mode_or_system.unwrap_or(SslMode::Prefer),
                root,
                connector,
            },
        })
    }

    /// The `sslmode` given in the connection string, if any.
    pub fn ssl_mode(&self) -> Option<SslMode> {
        self.tls.mode
    }

    /// How the server's certificate is checked; None: sessions do not use TLS.
    pub fn verify(&self) -> Option<Verify> {
        self.tls.connector.as_ref().map(|(v, _)| *v)
    }

    /// Opens a session: every PostgreSQL session promgres opens comes through here.
    pub fn connect(&self) -> Result<postgres::Client, StoreError> {
        let result = match &self.tls.connector {
            None => self.pg.connect(postgres::NoTls),
            Some((_, connector)) => self.pg.connect(connector.clone()),
        };
        result.map_err(|e| self.explain(e))
    }

    /// A connection error, with certificate failures said in the operator's words.
    fn explain(&self, e: postgres::Error) -> StoreError {
        let cert = certificate_error(&e);
        // rust-postgres's Display names only the kind ("error performing TLS handshake",
        // "error connecting to server"); the why is in its sources.
        let mut why = String::new();
        if e.as_db_error().is_none() {
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                let text = s.to_string();
                if !text.is_empty() && !why.contains(&text) {
                    why.push_str(": ");
                    why.push_str(&text);
                }
                source = s.source();
            }
        }
        let mut err = StoreError::from(e);
        err.message.push_str(&why);
        if let Some(cert) = cert {
            let mode = self.tls.effective.as_str();
            let root = self
                .tls
                .root
                .as_ref()
                .map_or_else(|| "none".to_string(), RootCert::to_string);
            err.message = match cert {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "TLS: the server's certificate does not name the host connected to \
                     (sslmode={mode}): {cert}"
                ),
                CertificateError::UnknownIssuer => format!(
                    "TLS: the server's certificate could not be verified: no CA in \
                     sslrootcert={root} signed it (sslmode={mode}; UnknownIssuer)"
                ),
                _ => format!(
                    "TLS: the server's certificate could not be verified (sslmode={mode}, \
                     sslrootcert={root}): {cert}"
                ),
            };
        }
        err
    }
}

/// The certificate error inside a failed handshake, if that is why it failed.
fn certificate_error(e: &postgres::Error) -> Option<CertificateError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        let inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        for candidate in [Some(s), inner].into_iter().flatten() {
            if let Some(rustls::Error::InvalidCertificate(c)) =
                candidate.downcast_ref::<rustls::Error>()
            {
                return Some(c.clone());
            }
        }
        source = s.source();
    }
    None
}

/// The `sslmode` and `sslrootcert` values found in a connection string.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a connection string; the rest is returned as it was.
fn take_tls_params(s: &str) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams::default();
    let mut keep = |key: &str, value: String| -> bool {
        match key {
            "sslmode" => params.sslmode = Some(value),
            "sslrootcert" => params.sslrootcert = Some(value),
            _ => return true,
        }
        false
    };
    let rest = if let Some(after) = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
    {
        // The query starts at the first '?' after the user info (rust-postgres reads the
        // user info up to the first '@').
        let from = after.find('@').map_or(0, |at| at + 1);
        match after[from..].find('?') {
            None => s.to_string(),
            Some(q) => {
                let q = s.len() - after.len() + from + q;
                let mut kept = Vec::new();
                for pair in s[q + 1..].split('&') {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if keep(&percent_decode(k)?, percent_decode(v)?) {
                        kept.push(pair);
                    }
                }
                let mut rest = s[..q].to_string();
                if !kept.is_empty() {
                    rest.push('?');
                    rest.push_str(&kept.join("&"));
                }
                rest
            }
        }
    } else {
        let mut rest = String::with_capacity(s.len());
        let mut last = 0;
        for (start, end, key, value) in key_values(s)? {
            if !keep(&key, value) {
                rest.push_str(&s[last..start]);
                last = end;
            }
        }
        rest.push_str(&s[last..]);
        rest
    };
    Ok((rest, params))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the connection URI's parameters")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a connection URI parameter is not UTF-8".to_string())
}

/// The `key = value` words of a libpq key/value string: (start, end, key, unquoted value),
/// start and end spanning the whole word.
fn key_values(s: &str) -> Result<Vec<(usize, usize, String, String)>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i >= b.len() {
            return Ok(out);
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_string();
        i = skip_ws(i);
        if b.get(i) != Some(&b'=') {
            // rust-postgres will say what is wrong; nothing of ours follows.
            return Ok(out);
        }
        i = skip_ws(i + 1);
        let mut value = Vec::new();
        if b.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(format!("unterminated quoted value of {key}")),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < b.len() => {
                        value.push(b[i + 1]);
                        i += 2;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
        }
        let value = String::from_utf8(value).map_err(|_| format!("{key} is not UTF-8"))?;
        out.push((start, i, key, value));
    }
}

/// The trusted CAs of `sslrootcert`.
fn load_roots(root: &RootCert) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match root {
        RootCert::File(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    format!("sslrootcert {} is not a PEM file: {e}", path.display())
                })?;
                roots.add(cert).map_err(|e| {
                    format!(
                        "sslrootcert {} holds a certificate that is not a usable CA: {e}",
                        path.display()
                    )
                })?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "sslrootcert {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ));
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (_, _) = roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(format!(
                    "sslrootcert=system: no CA certificates found in the system store \
                     (SSL_CERT_FILE, SSL_CERT_DIR or the distribution's bundle){}",
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", why.join("; "))
                    }
                ));
            }
        }
    }
    Ok(roots)
}

fn client_config(verify: Verify, roots: Option<RootCertStore>) -> Result<ClientConfig, String> {
    // ring, not aws-lc-rs: no cmake/C toolchain in the static build. rustls 0.23.48 deprecates
    // ring's provider for lacking post-quantum key exchange; the classical groups are sound.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let mut config = match (verify, roots) {
        (Verify::Full, Some(roots)) => builder.with_root_certificates(roots),
        (Verify::Chain, Some(roots)) => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoNameCheck {
                    roots: Some(Arc::new(roots)),
                    algorithms,
                }))
        }
        (Verify::Nothing, _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoNameCheck {
                roots: None,
                algorithms,
            })),
        (_, None) => return Err("TLS set-up: no sslrootcert for a verifying sslmode".into()),
    }
    .with_no_client_auth();
    // PostgreSQL 17's sslnegotiation=direct wants this ALPN; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

/// The verifier of the modes that do not check the server's name: `verify-ca` (`roots`:
/// the chain must end at a trusted CA) and `prefer`/`require` without `sslrootcert` (no
/// roots: any certificate, libpq's behaviour). Handshake signatures are checked as always.
#[derive(Debug)]
struct NoNameCheck {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoNameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(s: &str) -> (String, TlsParams) {
        take_tls_params(s).expect("parse")
    }

    #[test]
    fn tls_parameters_are_taken_out_of_uris_and_key_values() {
        let (rest, p) = params(
            "postgresql://u:p%3Fw@h:5432/d?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        );
        assert_eq!(rest, "postgresql://u:p%3Fw@h:5432/d?application_name=x");
        assert_eq!(p.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/tmp/ca.pem"));

        let (rest, p) = params("postgres://u@h/d?sslmode=require");
        assert_eq!(rest, "postgres://u@h/d");
        assert_eq!(p.sslmode.as_deref(), Some("require"));

        // A '?' in an unescaped password is not the query.
        let (rest, p) = params("postgresql://u:a?b@h/d");
        assert_eq!(rest, "postgresql://u:a?b@h/d");
        assert_eq!(p, TlsParams::default());

        let (rest, p) = params(
            "host=h sslmode = verify-ca  sslrootcert='/a dir/it\\'s.pem' dbname=d password=x\\ y",
        );
        assert_eq!(rest, "host=h    dbname=d password=x\\ y");
        let pg: postgres::Config = rest.parse().expect("the rest parses");
        assert_eq!(pg.get_password(), Some(&b"x y"[..]));
        assert_eq!(p.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/a dir/it's.pem"));
    }

    #[test]
    fn modes_follow_libpq() {
        let db = DbConfig::parse("postgresql://u@h/d").expect("plain");
        assert_eq!(db.verify(), None);
        assert_eq!(db.get_ssl_mode(), postgres::config::SslMode::Prefer);
        let db = DbConfig::parse("postgresql://u@h/d?sslmode=disable").expect("disable");
        assert_eq!(db.verify(), None);
        let db = DbConfig::parse("postgresql://u@h/d?sslmode=prefer").expect("prefer");
        assert_eq!(db.verify(), Some(Verify::Nothing));
        assert_eq!(db.get_ssl_mode(), postgres::config::SslMode::Prefer);
        let db = DbConfig::parse("host=h sslmode=require").expect("require");
        assert_eq!(db.verify(), Some(Verify::Nothing));
        assert_eq!(db.get_ssl_mode(), postgres::config::SslMode::Require);
        // A Unix-domain socket is never encrypted.
        let db = DbConfig::parse("host=/run/postgresql sslmode=require").expect("unix");
        assert_eq!(db.verify(), None);
        assert!(DbConfig::parse("host=/run/postgresql,h sslmode=require")
            .unwrap_err()
            .contains("Unix-domain"));

        for bad in [
            "postgresql://u@h/d?sslmode=verify-full",
            "postgresql://u@h/d?sslmode=verify-ca",
        ] {
            assert!(DbConfig::parse(bad)
                .unwrap_err()
                .contains("needs sslrootcert"));
        }
        assert!(DbConfig::parse("postgresql://u@h/d?sslmode=allow")
            .unwrap_err()
            .contains("not supported"));
        assert!(DbConfig::parse("postgresql://u@h/d?sslmode=bogus")
            .unwrap_err()
            .contains("bogus"));
        assert!(
            DbConfig::parse("postgresql://u@h/d?sslmode=require&sslrootcert=system")
                .unwrap_err()
                .contains("needs sslmode=verify-full")
        );
    }

    #[test]
    fn a_missing_or_bad_root_file_is_named_and_the_password_is_not() {
        let missing = "/nonexistent/promgres-ca.pem";
        let e = DbConfig::parse(&format!(
            "postgresql://u:secretpw@h/d?sslmode=verify-full&sslrootcert={missing}"
        ))
        .unwrap_err();
        assert!(e.contains(missing) && !e.contains("secretpw"), "{e}");
        // An sslrootcert alone turns TLS on (prefer, chain checked), so it is loaded too.
        let e = DbConfig::parse(&format!("host=h sslrootcert={missing}")).unwrap_err();
        assert!(e.contains(missing), "{e}");

        let dir = std::env::temp_dir().join(format!("promgres-pgtls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello\n").expect("write");
        let e = DbConfig::parse(&format!(
            "host=h password=secretpw sslmode=verify-ca sslrootcert={}",
            not_pem.display()
        ))
        .unwrap_err();
        assert!(
            e.contains(&not_pem.display().to_string()) && e.contains("no PEM certificate"),
            "{e}"
        );
        assert!(!e.contains("secretpw"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
