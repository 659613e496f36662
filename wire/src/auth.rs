//! Password authentication: SCRAM-SHA-256 against verifiers the node keeps
//! (PostgreSQL's format, never a password-equivalent secret), through
//! pgwire's SCRAM exchange.
//!
//! A user that does not exist, or may not log in, goes through the same
//! exchange against a made-up verifier and fails at the same step with the
//! same message as a wrong password, as PostgreSQL does: the server does
//! not tell which user names exist.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth, ScramSecret};
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::{PgWireError, PgWireResult};
use sha2::{Digest, Sha256};

/// SCRAM iterations for verifiers made here (PostgreSQL's default).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// The roles clients log in as; the node keeps them in replicated state.
pub trait Roles: Send + Sync + 'static {
    /// The verifier of `user` if it exists and may log in.
    fn login_verifier(&self, user: &str) -> Option<ScramVerifier>;
    /// Whether `user` is a superuser (announced as `is_superuser`).
    fn is_superuser(&self, user: &str) -> bool;
}

/// A SCRAM-SHA-256 verifier, as PostgreSQL stores it in `pg_authid`:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64).
/// Knowing it lets a server check a password, not log in as the user.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramVerifier {
    // The keys stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramVerifier {
    /// The verifier of `password` with `salt` (at least 16 random bytes,
    /// drawn by the caller: the node draws it once, on the leader, so the
    /// replicated entry carries the result).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = gen_salted_password(password, salt, iterations.max(1) as usize);
        match ScramSecret::verifier_from_salted_password(
            salt.to_vec(),
            salted,
            iterations.max(1) as usize,
        ) {
            ScramSecret::Verifier {
                salt,
                iterations,
                stored_key,
                server_key,
            } => ScramVerifier {
                iterations: iterations as u32,
                salt,
                stored_key,
                server_key,
            },
            ScramSecret::SaltedPassword { .. } => unreachable!("a verifier was asked for"),
        }
    }

    /// Parses PostgreSQL's text form; None if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok().filter(|&i| i >= 1)?;
        let decode = |s: &str| STANDARD.decode(s).ok();
        let v = ScramVerifier {
            iterations,
            salt: decode(salt).filter(|s| !s.is_empty())?,
            stored_key: decode(stored_key).filter(|k| k.len() == 32)?,
            server_key: decode(server_key).filter(|k| k.len() == 32)?,
        };
        Some(v)
    }

    fn secret(&self) -> ScramSecret {
        ScramSecret::Verifier {
            salt: self.salt.clone(),
            iterations: self.iterations as usize,
            stored_key: self.stored_key.clone(),
            server_key: self.server_key.clone(),
        }
    }
}

impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }
}

/// pgwire's view of [`Roles`].
struct RoleSource {
    roles: Arc<dyn Roles>,
    /// Drawn at start: made-up verifiers differ from one server run to the
    /// next but stay the same for one user name within a run (a changing
    /// salt would tell an attacker the user does not exist).
    mock_key: [u8; 32],
}

impl fmt::Debug for RoleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleSource").finish_non_exhaustive()
    }
}

impl RoleSource {
    /// A verifier no password matches, for a user who may not log in.
    fn mock_verifier(&self, user: &str) -> ScramVerifier {
        let derive = |what: &[u8]| {
            let mut h = Sha256::new();
            h.update(self.mock_key);
            h.update(what);
            h.update(user.as_bytes());
            h.finalize().to_vec()
        };
        ScramVerifier {
            iterations: SCRAM_ITERATIONS,
            salt: derive(b"salt")[..16].to_vec(),
            stored_key: derive(b"stored"),
            server_key: derive(b"server"),
        }
    }
}

#[async_trait]
impl AuthSource for RoleSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        // Only SCRAM is offered, which asks for the verifier instead.
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_string(),
        ))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        let user = login.user().unwrap_or_default();
        let verifier = self
            .roles
            .login_verifier(user)
            .unwrap_or_else(|| self.mock_verifier(user));
        Ok((verifier.secret(), None))
    }
}

/// The SCRAM mechanism for plaintext connections and, when the server has a
/// certificate, the one for TLS connections, which also offers channel
/// binding (SCRAM-SHA-256-PLUS: the password exchange is then tied to this
/// TLS session, so a man in the middle cannot relay it).
pub(crate) struct ScramMechanisms {
    pub(crate) plain: Arc<ScramAuth>,
    pub(crate) tls: Arc<ScramAuth>,
}

impl ScramMechanisms {
    pub(crate) fn new(roles: Arc<dyn Roles>, cert_pem: Option<&[u8]>) -> PgWireResult<Self> {
        let source = Arc::new(RoleSource {
            roles,
            mock_key: rand::random(),
        });
        let mut plain = ScramAuth::new(source.clone());
        plain.set_iterations(SCRAM_ITERATIONS as usize);
        let mut tls = ScramAuth::new(source);
        tls.set_iterations(SCRAM_ITERATIONS as usize);
        if let Some(pem) = cert_pem {
            tls.configure_certificate(pem)?;
        }
        Ok(ScramMechanisms {
            plain: Arc::new(plain),
            tls: Arc::new(tls),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_round_trip_through_postgresql_text() {
        let v = ScramVerifier::from_password("secret", b"0123456789abcdef", 4096);
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        assert_eq!(ScramVerifier::parse(&text), Some(v));
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:$x:y",
        ] {
            assert_eq!(ScramVerifier::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_verifier_matches_the_rfc_definition() {
        // RFC 7677's password and salt; the keys computed independently
        // with Python's hashlib/hmac from RFC 5802's definitions
        // (SaltedPassword = PBKDF2-HMAC-SHA-256, StoredKey = H(HMAC(.., "Client
        // Key")), ServerKey = HMAC(.., "Server Key")).
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = ScramVerifier::from_password("pencil", &salt, 4096);
        assert_eq!(
            v.to_string(),
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }
}
