//! Who may call promgres: checks a request's `Authorization` header (basic auth against the
//! web configuration's bcrypt hashes, or a bearer token from the tokens file) against the
//! role the request needs, and holds the access settings and TLS configuration that SIGHUP
//! reloads.
//!
//! bcrypt is slow on purpose (~50-100 ms at cost 10) and Prometheus sends the same
//! credentials with every request, so a verified password is remembered per user as a keyed
//! digest (HMAC-SHA-256 under a key made at start-up; the password itself is not kept) and
//! later requests compare digests in constant time, as the exporter-toolkit's cache does.
//! Tokens are compared the same way, digest against digest, so neither the time taken nor
//! the length of a wrong guess tells anything.

use crate::web_config::{AccessConfig, AccessSources, Role, Roles};
use ring::hmac;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or wrong ones: 401 with `WWW-Authenticate`.
    Unauthenticated,
    /// Good credentials without the role the request needs: 403.
    Forbidden,
    /// Every bcrypt slot is busy (a flood of wrong passwords): 503 with Retry-After, which
    /// Prometheus retries; cached credentials never wait for bcrypt.
    Busy,
}

/// One generation of access settings (a reload builds a new one).
pub struct Access {
    config: AccessConfig,
    metrics_auth: bool,
    key: hmac::Key,
    tokens: Vec<(hmac::Tag, Roles)>,
    /// Per user, the digest of the last password bcrypt accepted.
    verified: Mutex<HashMap<String, hmac::Tag>>,
    /// Tokens bounding concurrent bcrypt runs (half the cores): wrong passwords cost a
    /// bcrypt run each, and must not take every handler thread.
    bcrypt_slots: (
        crossbeam_channel::Sender<()>,
        crossbeam_channel::Receiver<()>,
    ),
}

impl Access {
    pub fn new(config: AccessConfig, metrics_auth: bool) -> Result<Access, String> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| "no randomness for the credential cache key")?;
        let tokens = config
            .tokens
            .iter()
            .map(|t| (hmac::sign(&key, t.token.as_bytes()), t.roles))
            .collect();
        let n = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        let bcrypt_slots = crossbeam_channel::bounded(n);
        for _ in 0..n {
            let _ = bcrypt_slots.0.send(());
        }
        Ok(Access {
            config,
            metrics_auth,
            key,
            tokens,
            verified: Mutex::new(HashMap::new()),
            bcrypt_slots,
        })
    }

    /// Whether requests need credentials at all.
    pub fn enabled(&self) -> bool {
        self.config.requires_credentials()
    }

    /// Whether /metrics needs the read role.
    pub fn metrics_protected(&self) -> bool {
        self.metrics_auth && self.enabled()
    }

    /// The headers `http_server_config.headers` adds to every response.
    pub fn headers(&self) -> &[(String, String)] {
        &self.config.headers
    }

    /// Checks `authorization` (the header's value, if any) for `need`.
    pub fn check(&self, authorization: Option<&str>, need: Role) -> Result<(), Denied> {
        if !self.enabled() {
            return Ok(());
        }
        let roles = self.authenticate(authorization)?;
        if roles.allow(need) {
            Ok(())
        } else {
            Err(Denied::Forbidden)
        }
    }

    fn authenticate(&self, authorization: Option<&str>) -> Result<Roles, Denied> {
        let value = authorization.ok_or(Denied::Unauthenticated)?.trim();
        let (scheme, rest) = value.split_once(' ').ok_or(Denied::Unauthenticated)?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let digest = hmac::sign(&self.key, rest.as_bytes());
            // Every token is compared, so the time taken does not depend on which matched.
            let mut found: Option<Roles> = None;
            for (tag, roles) in &self.tokens {
                if equal(tag.as_ref(), digest.as_ref()) {
                    found = Some(*roles);
                }
            }
            return found.ok_or(Denied::Unauthenticated);
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(Denied::Unauthenticated);
        }
        let decoded = base64_decode(rest).ok_or(Denied::Unauthenticated)?;
        let text = String::from_utf8(decoded).map_err(|_| Denied::Unauthenticated)?;
        let (name, password) = text.split_once(':').ok_or(Denied::Unauthenticated)?;
        let Some(user) = self.config.users.iter().find(|u| u.name == name) else {
            // As long as for a known user, so a failed guess does not tell whether the user exists.
            let _slot = self.bcrypt_slot()?;
            let _ = bcrypt::verify(password, dummy_hash());
            return Err(Denied::Unauthenticated);
        };
        let digest = hmac::sign(&self.key, password.as_bytes());
        let cached = self
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(name).map(|t| equal(t.as_ref(), digest.as_ref())));
        if cached == Some(true) {
            return Ok(user.roles);
        }
        let _slot = self.bcrypt_slot()?;
        if bcrypt::verify(password, &user.bcrypt_hash).unwrap_or(false) {
            if let Ok(mut m) = self.verified.lock() {
                m.insert(name.to_string(), digest);
            }
            Ok(user.roles)
        } else {
            Err(Denied::Unauthenticated)
        }
    }

    /// A bcrypt slot, given back when dropped; `Busy` when none is free.
    fn bcrypt_slot(&self) -> Result<BcryptSlot<'_>, Denied> {
        self.bcrypt_slots
            .1
            .try_recv()
            .map(|()| BcryptSlot(&self.bcrypt_slots.0))
            .map_err(|_| Denied::Busy)
    }
}

struct BcryptSlot<'a>(&'a crossbeam_channel::Sender<()>);

impl Drop for BcryptSlot<'_> {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("promgres-no-such-user", 10).unwrap_or_default())
}

/// Constant-time equality of two digests of the same length.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Standard base64 (padding optional); `None` on anything else.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The access settings and TLS configuration in force, swapped whole by [`WebAccess::reload`].
pub struct WebAccess {
    sources: AccessSources,
    access: RwLock<Arc<Access>>,
    tls: Option<Arc<RwLock<Arc<rustls::ServerConfig>>>>,
}

impl WebAccess {
    /// Reads the files the flags name; an error stops start-up.
    pub fn load(sources: AccessSources) -> Result<WebAccess, String> {
        let config = sources.load()?;
        let tls = match &config.tls {
            Some(t) => Some(Arc::new(RwLock::new(crate::tls::server_config(t)?))),
            None => None,
        };
        let access = Access::new(config, sources.metrics_auth)?;
        Ok(WebAccess {
            sources,
            access: RwLock::new(Arc::new(access)),
            tls,
        })
    }

    /// The settings in force now.
    pub fn current(&self) -> Arc<Access> {
        match self.access.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// What the listener asks for each new connection's TLS settings, when TLS is on.
    pub fn tls_source(&self) -> Option<tiny_http::TlsConfigSource> {
        let tls = self.tls.clone()?;
        Some(Arc::new(move || match tls.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }))
    }

    /// Reads the files again (SIGHUP). On any error the settings in force stay, whole.
    /// TLS cannot be switched on or off this way (the listener is built at start-up).
    pub fn reload(&self) -> Result<(), String> {
        let config = self.sources.load()?;
        let tls = match (&config.tls, &self.tls) {
            (Some(t), Some(_)) => Some(crate::tls::server_config(t)?),
            (None, None) => None,
            _ => {
                return Err(
                    "tls_server_config was added or removed: restart promgres to change that"
                        .into(),
                )
            }
        };
        if self.current().enabled() && !config.requires_credentials() {
            return Err(
                "the new settings would open every route without credentials: \
                 restart promgres to turn authentication off"
                    .into(),
            );
        }
        let access = Access::new(config, self.sources.metrics_auth)?;
        if let (Some(new), Some(slot)) = (tls, &self.tls) {
            match slot.write() {
                Ok(mut s) => *s = new,
                Err(poisoned) => *poisoned.into_inner() = new,
            }
        }
        match self.access.write() {
            Ok(mut a) => *a = Arc::new(access),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(access),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web_config::{Token, User};

    fn access() -> Access {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        Access::new(
            AccessConfig {
                users: vec![User {
                    name: "prom".into(),
                    bcrypt_hash: hash,
                    roles: Roles::parse("write").unwrap(),
                }],
                tokens: vec![Token {
                    token: "reader-token-0123456789".into(),
                    roles: Roles::parse("read").unwrap(),
                    line: 1,
                }],
                ..Default::default()
            },
            false,
        )
        .unwrap()
    }

    fn basic(user: &str, password: &str) -> String {
        let raw = format!("{user}:{password}");
        let mut out = String::new();
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for chunk in raw.as_bytes().chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        format!("Basic {out}")
    }

    #[test]
    fn basic_auth_and_roles() {
        let a = access();
        assert_eq!(a.check(None, Role::Write), Err(Denied::Unauthenticated));
        assert_eq!(a.check(Some(&basic("prom", "s3cret")), Role::Write), Ok(()));
        // Second time from the cache; still right.
        assert_eq!(a.check(Some(&basic("prom", "s3cret")), Role::Write), Ok(()));
        assert_eq!(
            a.check(Some(&basic("prom", "s3cret")), Role::Read),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            a.check(Some(&basic("prom", "wrong")), Role::Write),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            a.check(Some(&basic("nobody", "s3cret")), Role::Write),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            a.check(Some("Basic !!!notbase64"), Role::Write),
            Err(Denied::Unauthenticated)
        );
    }

    #[test]
    fn a_flood_of_wrong_passwords_gets_busy_not_every_thread() {
        let a = access();
        // Cached credentials first, then every slot taken.
        assert_eq!(a.check(Some(&basic("prom", "s3cret")), Role::Write), Ok(()));
        let held: Vec<_> = std::iter::from_fn(|| a.bcrypt_slot().ok()).collect();
        assert!(!held.is_empty());
        assert_eq!(
            a.check(Some(&basic("prom", "wrong")), Role::Write),
            Err(Denied::Busy)
        );
        assert_eq!(
            a.check(Some(&basic("prom", "s3cret")), Role::Write),
            Ok(()),
            "cached credentials never wait for bcrypt"
        );
        drop(held);
        assert_eq!(
            a.check(Some(&basic("prom", "wrong")), Role::Write),
            Err(Denied::Unauthenticated)
        );
    }

    #[test]
    fn bearer_tokens() {
        let a = access();
        assert_eq!(
            a.check(Some("Bearer reader-token-0123456789"), Role::Read),
            Ok(())
        );
        assert_eq!(
            a.check(Some("bearer reader-token-0123456789"), Role::Write),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            a.check(Some("Bearer reader-token-012345678"), Role::Read),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            a.check(Some("Bearer"), Role::Read),
            Err(Denied::Unauthenticated)
        );
    }

    #[test]
    fn open_without_credentials_configured() {
        let a = Access::new(AccessConfig::default(), true).unwrap();
        assert_eq!(a.check(None, Role::Admin), Ok(()));
        assert!(!a.metrics_protected());
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("cHJvbTpzM2NyZXQ=").unwrap(), b"prom:s3cret");
        assert_eq!(base64_decode("YQ").unwrap(), b"a");
        assert!(base64_decode("a b").is_none());
    }
}
