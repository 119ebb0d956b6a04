//! What `--web-config-file`, `--web-tokens-file` and `--web-user-role` say, read into plain
//! values: TLS settings, users with their bcrypt hashes, bearer tokens, and who may do what.
//!
//! The web configuration file is the one every Prometheus component reads (Prometheus's
//! `--web.config.file`, the exporter-toolkit format), so an operator can reuse it:
//! `tls_server_config`, `http_server_config` and `basic_auth_users`. Unknown keys are errors,
//! as in the toolkit: a security setting promgres would silently ignore is worse than a
//! refusal to start. File names inside it are relative to the file's directory.
//!
//! Roles are promgres's own (the toolkit's users may do everything): `write` (remote write),
//! `read` (remote read, the HA state and page, /metrics with `--web-metrics-auth`) and
//! `admin` (everything, and the HA hand-over). Secrets read here (tokens, keys) never appear
//! in an error message: errors name the file and the line.

use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

/// What a credential allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles {
    pub write: bool,
    pub read: bool,
    pub admin: bool,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Write,
    Read,
    Admin,
}

impl Roles {
    /// Whether these roles allow `role`; admin allows everything.
    pub fn allow(&self, role: Role) -> bool {
        self.admin
            || match role {
                Role::Write => self.write,
                Role::Read => self.read,
                Role::Admin => false,
            }
    }

    /// Parses `write`, `read`, `admin` or a comma-separated list of them.
    pub fn parse(s: &str) -> Result<Roles, String> {
        let mut roles = Roles::default();
        for part in s.split(',').map(str::trim) {
            match part {
                "write" => roles.write = true,
                "read" => roles.read = true,
                "admin" => roles.admin = true,
                other => {
                    return Err(format!(
                        "unknown role {other:?} (roles: write, read, admin, comma-separated)"
                    ))
                }
            }
        }
        Ok(roles)
    }
}

/// The client-certificate policy, named as in Go's `crypto/tls` (the toolkit's
/// `client_auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// `tls_server_config`, with the files it names already read (a reload re-reads them, so
/// rotated certificates are picked up).
#[derive(Clone)]
pub struct TlsSettings {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_auth: ClientAuth,
    pub client_ca_pem: Option<Vec<u8>>,
    /// Subject alternative names of which a client certificate must carry one (empty: any).
    pub client_allowed_sans: Vec<String>,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
    /// Go's names of TLS 1.2 cipher suites (empty: the TLS stack's defaults).
    pub cipher_suites: Vec<String>,
    /// Go's names of curves (empty: the TLS stack's defaults).
    pub curve_preferences: Vec<String>,
    pub prefer_server_cipher_suites: bool,
}

impl std::fmt::Debug for TlsSettings {
    // The key is a secret: never printed, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("client_auth", &self.client_auth)
            .field("client_ca", &self.client_ca_pem.is_some())
            .field("min_version", &self.min_version)
            .field("max_version", &self.max_version)
            .finish_non_exhaustive()
    }
}

/// A basic-auth user: name, bcrypt hash, roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub bcrypt_hash: String,
    pub roles: Roles,
}

/// An accepted bearer token and its roles.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub roles: Roles,
    /// Its line in the tokens file, to name it in logs without showing it.
    pub line: usize,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(line {}, {:?})", self.line, self.roles)
    }
}

/// Everything the HTTP layer needs to know about access: read from the files at start-up and
/// again on SIGHUP.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    pub tls: Option<TlsSettings>,
    pub users: Vec<User>,
    pub tokens: Vec<Token>,
    /// `http_server_config.headers`: added to every response.
    pub headers: Vec<(String, String)>,
    /// A tokens file or a `basic_auth_users` key was given: credentials are required even
    /// when the lists are empty (an emptied tokens file denies everyone, it does not open
    /// every route).
    pub credentials_configured: bool,
}

impl AccessConfig {
    /// Whether requests must carry credentials.
    pub fn requires_credentials(&self) -> bool {
        self.credentials_configured || !self.users.is_empty() || !self.tokens.is_empty()
    }
}

/// Where the access settings come from (the flags), kept to read them again on reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessSources {
    pub web_config_file: Option<PathBuf>,
    pub tokens_file: Option<PathBuf>,
    /// `--web-user-role NAME=ROLES`, in order.
    pub user_roles: Vec<(String, Roles)>,
    /// `--web-metrics-auth`: /metrics needs the read role.
    pub metrics_auth: bool,
}

impl AccessSources {
    /// Parses the `--web-user-role` values (`NAME=ROLES`).
    pub fn parse_user_roles(values: &[String]) -> Result<Vec<(String, Roles)>, String> {
        values
            .iter()
            .map(|v| {
                let (name, roles) = v.split_once('=').ok_or_else(|| {
                    format!("--web-user-role {v:?}: expected NAME=ROLES, e.g. prometheus=write")
                })?;
                let roles =
                    Roles::parse(roles).map_err(|e| format!("--web-user-role {name}: {e}"))?;
                Ok((name.to_string(), roles))
            })
            .collect()
    }

    /// Reads every file named by the flags.
    pub fn load(&self) -> Result<AccessConfig, String> {
        let mut config = AccessConfig::default();
        let mut hashes = Vec::new();
        if let Some(path) = &self.web_config_file {
            let text = read_text(path)?;
            let dir = path.parent().unwrap_or(Path::new("."));
            let web =
                parse_web_config(&text, dir).map_err(|e| format!("{}: {e}", path.display()))?;
            config.tls = web.tls;
            config.headers = web.headers;
            config.credentials_configured |= web.basic_auth;
            hashes = web.users;
        }
        for (name, hash) in hashes {
            let roles = self
                .user_roles
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, r)| *r)
                .ok_or_else(|| {
                    format!(
                        "basic_auth_users has {name:?} but no --web-user-role {name}=ROLES \
                         (roles: write, read, admin)"
                    )
                })?;
            config.users.push(User {
                name,
                bcrypt_hash: hash,
                roles,
            });
        }
        for (name, _) in &self.user_roles {
            if !config.users.iter().any(|u| &u.name == name) {
                return Err(format!(
                    "--web-user-role {name}: no such user in the web config file's basic_auth_users"
                ));
            }
        }
        if let Some(path) = &self.tokens_file {
            config.credentials_configured = true;
            config.tokens =
                parse_tokens(&read_text(path)?).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(config)
    }
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The response headers `http_server_config.headers` may set, as in the exporter-toolkit.
const ALLOWED_HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

/// The parts of a web configuration file.
#[derive(Debug, Default)]
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    pub headers: Vec<(String, String)>,
    /// basic_auth_users: name and bcrypt hash.
    pub users: Vec<(String, String)>,
    /// Whether the file has a `basic_auth_users` key (even an empty one).
    pub basic_auth: bool,
}

/// Parses the exporter-toolkit web configuration; `dir` resolves relative file names.
pub fn parse_web_config(text: &str, dir: &Path) -> Result<WebConfig, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut out = WebConfig::default();
    let Some(doc) = docs.into_iter().next() else {
        return Ok(out);
    };
    for (key, value) in entries(&doc, "the file")? {
        match key.as_str() {
            "tls_server_config" => out.tls = parse_tls(value, dir)?,
            "http_server_config" => {
                for (k, v) in entries(value, "http_server_config")? {
                    match k.as_str() {
                        // promgres speaks HTTP/1.1 (Prometheus's remote write does too).
                        "http2" => {}
                        "headers" => {
                            for (name, v) in entries(v, "http_server_config.headers")? {
                                let value = string(v, "a header value")?;
                                // The toolkit's list: headers that cannot change what an
                                // answer means (no Content-Length, Content-Type, ...).
                                if !ALLOWED_HEADERS
                                    .iter()
                                    .any(|h| h.eq_ignore_ascii_case(&name))
                                {
                                    return Err(format!(
                                        "http_server_config.headers: {name} is not one of {}",
                                        ALLOWED_HEADERS.join(", ")
                                    ));
                                }
                                if value.chars().any(|c| c.is_control()) {
                                    return Err(format!(
                                        "http_server_config.headers.{name}: control characters"
                                    ));
                                }
                                out.headers.push((name, value));
                            }
                        }
                        other => return Err(format!("unknown key http_server_config.{other}")),
                    }
                }
            }
            "basic_auth_users" => {
                out.basic_auth = true;
                for (name, v) in entries(value, "basic_auth_users")? {
                    let hash = string(v, "a bcrypt hash")?;
                    if !hash.starts_with("$2") {
                        return Err(format!(
                            "basic_auth_users.{name}: not a bcrypt hash (htpasswd -nBC 10 \"\" | tr -d ':\\n')"
                        ));
                    }
                    out.users.push((name, hash));
                }
            }
            other => return Err(format!("unknown key {other}")),
        }
    }
    Ok(out)
}

fn parse_tls(value: &Yaml, dir: &Path) -> Result<Option<TlsSettings>, String> {
    if value.is_null() {
        return Ok(None);
    }
    let mut cert = None;
    let mut key = None;
    let mut client_auth = ClientAuth::NoClientCert;
    let mut client_ca = None;
    let mut settings = TlsSettings {
        cert_pem: Vec::new(),
        key_pem: Vec::new(),
        client_auth,
        client_ca_pem: None,
        client_allowed_sans: Vec::new(),
        min_version: None,
        max_version: None,
        cipher_suites: Vec::new(),
        curve_preferences: Vec::new(),
        prefer_server_cipher_suites: false,
    };
    let file = |v: &Yaml, what: &str| -> Result<Vec<u8>, String> {
        let name = string(v, what)?;
        read_bytes(&dir.join(name))
    };
    for (k, v) in entries(value, "tls_server_config")? {
        match k.as_str() {
            "cert_file" => cert = Some(file(v, "a file name")?),
            "key_file" => key = Some(file(v, "a file name")?),
            "cert" => cert = Some(string(v, "a PEM certificate")?.into_bytes()),
            "key" => key = Some(string(v, "a PEM key")?.into_bytes()),
            "client_ca_file" => client_ca = Some(file(v, "a file name")?),
            "client_ca" => client_ca = Some(string(v, "PEM certificates")?.into_bytes()),
            "client_auth_type" => {
                client_auth = match string(v, "a client auth type")?.as_str() {
                    "" | "NoClientCert" => ClientAuth::NoClientCert,
                    "RequestClientCert" => ClientAuth::RequestClientCert,
                    "RequireAnyClientCert" => ClientAuth::RequireAnyClientCert,
                    "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
                    "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
                    other => return Err(format!("unknown client_auth_type {other:?}")),
                }
            }
            "client_allowed_sans" => settings.client_allowed_sans = strings(v, &k)?,
            "min_version" => settings.min_version = Some(version(v)?),
            "max_version" => settings.max_version = Some(version(v)?),
            "cipher_suites" => settings.cipher_suites = strings(v, &k)?,
            "curve_preferences" => settings.curve_preferences = strings(v, &k)?,
            "prefer_server_cipher_suites" => {
                settings.prefer_server_cipher_suites = v
                    .as_bool()
                    .ok_or("prefer_server_cipher_suites: expected true or false")?
            }
            other => return Err(format!("unknown key tls_server_config.{other}")),
        }
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        return Err("tls_server_config needs cert_file (or cert) and key_file (or key)".into());
    };
    let verifies = matches!(
        client_auth,
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
    );
    if verifies && client_ca.is_none() {
        return Err(format!(
            "client_auth_type {client_auth:?} needs client_ca_file to verify against"
        ));
    }
    settings.cert_pem = cert;
    settings.key_pem = key;
    settings.client_auth = client_auth;
    settings.client_ca_pem = client_ca;
    Ok(Some(settings))
}

fn version(v: &Yaml) -> Result<TlsVersion, String> {
    match string(v, "a TLS version")?.as_str() {
        "TLS12" => Ok(TlsVersion::Tls12),
        "TLS13" => Ok(TlsVersion::Tls13),
        other => Err(format!(
            "TLS version {other:?} is not offered (promgres speaks TLS12 and TLS13)"
        )),
    }
}

fn entries<'a>(v: &'a Yaml, what: &str) -> Result<Vec<(String, &'a Yaml)>, String> {
    match v {
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| match k {
                Yaml::String(s) => Ok((s.clone(), v)),
                _ => Err(format!("{what}: keys must be strings")),
            })
            .collect(),
        Yaml::Null => Ok(Vec::new()),
        _ => Err(format!("{what}: expected a mapping")),
    }
}

fn string(v: &Yaml, what: &str) -> Result<String, String> {
    match v {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Integer(i) => Ok(i.to_string()),
        Yaml::Boolean(b) => Ok(b.to_string()),
        _ => Err(format!("expected {what}")),
    }
}

fn strings(v: &Yaml, what: &str) -> Result<Vec<String>, String> {
    match v {
        Yaml::Array(items) => items.iter().map(|i| string(i, what)).collect(),
        Yaml::Null => Ok(Vec::new()),
        _ => Err(format!("{what}: expected a list")),
    }
}

/// Parses a tokens file: per line `ROLES TOKEN` (e.g. `write 3f1c...`), `#` comments and
/// blank lines ignored. Errors name the line, never its content.
pub fn parse_tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(roles), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "line {}: expected ROLES TOKEN (e.g. \"write <token>\")",
                i + 1
            ));
        };
        let roles = Roles::parse(roles).map_err(|e| format!("line {}: {e}", i + 1))?;
        if token.len() < 16 {
            return Err(format!(
                "line {}: a token must be at least 16 characters (e.g. openssl rand -hex 32)",
                i + 1
            ));
        }
        tokens.push(Token {
            token: token.to_string(),
            roles,
            line: i + 1,
        });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_toolkit_format() {
        let dir = std::env::temp_dir().join(format!("promgres-webcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c.pem"), b"CERT").unwrap();
        std::fs::write(dir.join("k.pem"), b"KEY").unwrap();
        let text = "
tls_server_config:
  cert_file: c.pem
  key_file: k.pem
  min_version: TLS12
http_server_config:
  http2: false
  headers:
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  prometheus: $2y$10$abcdefghijklmnopqrstuv
";
        let web = parse_web_config(text, &dir).unwrap();
        let tls = web.tls.unwrap();
        assert_eq!(tls.cert_pem, b"CERT");
        assert_eq!(tls.key_pem, b"KEY");
        assert_eq!(tls.min_version, Some(TlsVersion::Tls12));
        assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
        assert_eq!(web.headers.len(), 1);
        assert_eq!(web.users[0].0, "prometheus");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_what_it_would_ignore() {
        let dir = Path::new("/nonexistent");
        assert!(parse_web_config("tls_config: {}", dir)
            .unwrap_err()
            .contains("unknown key tls_config"));
        assert!(parse_web_config("basic_auth_users:\n  a: plaintext\n", dir)
            .unwrap_err()
            .contains("not a bcrypt hash"));
        let err = parse_web_config(
            "tls_server_config:\n  cert: x\n  key: y\n  client_auth_type: RequireAndVerifyClientCert\n",
            dir,
        )
        .unwrap_err();
        assert!(err.contains("client_ca_file"), "{err}");
        assert!(parse_web_config("tls_server_config:\n  cert: x\n", dir).is_err());
        assert!(parse_web_config(": : :\n\t-", dir).is_err());
        assert!(parse_web_config("", dir).unwrap().tls.is_none());
    }

    #[test]
    fn token_file_errors_never_show_the_token() {
        let tokens = parse_tokens(
            "# comment\n\nwrite,read 0123456789abcdef0123\nadmin  ffffffffffffffffffff\n",
        )
        .unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(tokens[0].roles.write && tokens[0].roles.read && !tokens[0].roles.admin);
        assert_eq!(tokens[1].line, 4);
        let err = parse_tokens("write sekrit-short").unwrap_err();
        assert!(!err.contains("sekrit"), "{err}");
        let err = parse_tokens("writer 0123456789abcdef0123").unwrap_err();
        assert!(!err.contains("0123456789abcdef0123"), "{err}");
        assert!(!format!("{:?}", tokens[0]).contains("0123456789"));
    }

    #[test]
    fn an_empty_credential_list_denies_rather_than_opens() {
        let dir = std::env::temp_dir().join(format!("promgres-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tokens"), "# every token revoked\n").unwrap();
        std::fs::write(dir.join("web.yml"), "basic_auth_users: {}\n").unwrap();
        for sources in [
            AccessSources {
                tokens_file: Some(dir.join("tokens")),
                ..Default::default()
            },
            AccessSources {
                web_config_file: Some(dir.join("web.yml")),
                ..Default::default()
            },
        ] {
            let config = sources.load().unwrap();
            assert!(config.requires_credentials(), "{sources:?}");
        }
        assert!(!AccessSources::default()
            .load()
            .unwrap()
            .requires_credentials());
        assert!(parse_web_config(
            "http_server_config:\n  headers:\n    Content-Length: '0'\n",
            &dir
        )
        .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn roles() {
        let admin = Roles::parse("admin").unwrap();
        assert!(admin.allow(Role::Write) && admin.allow(Role::Read) && admin.allow(Role::Admin));
        let write = Roles::parse("write").unwrap();
        assert!(write.allow(Role::Write) && !write.allow(Role::Read) && !write.allow(Role::Admin));
        assert!(Roles::parse("root").is_err());
        let sources = AccessSources {
            user_roles: AccessSources::parse_user_roles(&["p=write,read".into()]).unwrap(),
            ..Default::default()
        };
        assert!(sources.user_roles[0].1.read);
        assert!(AccessSources::parse_user_roles(&["p".into()]).is_err());
    }
}
