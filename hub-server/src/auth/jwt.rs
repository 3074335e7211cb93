//! JWT bearer tokens: the built-in [`Authenticator`].

use std::fmt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{AuthError, AuthFuture, Authenticator, Principal};

/// The signature algorithms [`JwtAuthenticator`] verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256: a shared secret signs and verifies.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256: verified with an RSA public key (PEM).
    Rs256,
    /// ECDSA on P-256 with SHA-256: verified with an EC public key (PEM).
    Es256,
}

impl JwtAlgorithm {
    fn algorithm(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
        }
    }
}

/// The key that verifies tokens: the HS256 secret, or the PEM public key for RS256 and
/// ES256. `Debug` never shows it.
#[derive(Clone)]
pub struct JwtKey(Vec<u8>);

/// The shortest HS256 secret accepted, in bytes (the hash's 256 bits, RFC 7518 §3.2).
const MIN_HS256_KEY: usize = 32;

impl JwtKey {
    /// The key's bytes as given.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The contents of the file at `path`, without trailing white space (so a secret
    /// written with `echo` has no newline in it).
    ///
    /// # Errors
    ///
    /// [`JwtError::Key`] when the file cannot be read or is empty.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, JwtError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|error| JwtError::Key(format!("cannot read {}: {error}", path.display())))?;
        Self::trimmed(bytes, &path.display().to_string())
    }

    /// The value of the environment variable `name`, without trailing white space.
    ///
    /// # Errors
    ///
    /// [`JwtError::Key`] when the variable is unset or empty.
    pub fn from_env(name: &str) -> Result<Self, JwtError> {
        let value = std::env::var_os(name)
            .ok_or_else(|| JwtError::Key(format!("the environment variable {name} is not set")))?;
        Self::trimmed(value.into_encoded_bytes(), &format!("${name}"))
    }

    fn trimmed(mut bytes: Vec<u8>, source: &str) -> Result<Self, JwtError> {
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(JwtError::Key(format!("{source} is empty")));
        }
        Ok(Self(bytes))
    }
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JwtKey({} bytes)", self.0.len())
    }
}

/// Why a [`JwtAuthenticator`] cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The key is missing, unreadable, or not a key of the algorithm's kind.
    #[error("invalid JWT key: {0}")]
    Key(String),
}

/// How [`JwtAuthenticator`] validates tokens.
///
/// ```
/// use std::time::Duration;
/// use hub_server::{JwtAlgorithm, JwtKey, JwtOptions};
///
/// let options = JwtOptions::new(JwtAlgorithm::Hs256, JwtKey::from_bytes("a long random secret of 32 bytes"))
///     .issuer("https://login.example")
///     .audience("chat")
///     .leeway(Duration::from_secs(30));
/// assert_eq!(options.user_id_claim, "sub");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JwtOptions {
    /// The only algorithm accepted (a token naming another is refused, so an RS256 key
    /// can never be used as an HMAC secret).
    pub algorithm: JwtAlgorithm,
    /// The verifying key.
    pub key: JwtKey,
    /// The `iss` a token must carry; any when `None`. Default: `None`.
    pub issuer: Option<String>,
    /// The `aud` a token must carry (or hold, when it is an array); any when `None`.
    /// Default: `None`.
    pub audience: Option<String>,
    /// How far `exp` and `nbf` may be off, for clock differences between the issuer and
    /// this server. Default: 5 minutes (ASP.NET Core's `ClockSkew`).
    pub leeway: Duration,
    /// The claim whose value (a string, or a number written out) is the user id.
    /// Default: `sub`.
    pub user_id_claim: String,
}

impl JwtOptions {
    /// Tokens signed with `algorithm` and verified by `key`; no issuer or audience
    /// required, 5 minutes of leeway, the user id from `sub`.
    pub fn new(algorithm: JwtAlgorithm, key: JwtKey) -> Self {
        Self {
            algorithm,
            key,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(300),
            user_id_claim: "sub".into(),
        }
    }

    /// These options requiring `iss` to be `issuer`.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// These options requiring `aud` to be (or hold) `audience`.
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// These options with `leeway` as [`JwtOptions::leeway`].
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// These options taking the user id from the claim `name`.
    #[must_use]
    pub fn user_id_claim(mut self, name: impl Into<String>) -> Self {
        self.user_id_claim = name.into();
        self
    }
}

/// Validates JWT bearer tokens: the `Authorization: Bearer` header, or the `access_token`
/// query parameter (which the official clients use for WebSockets and Server-Sent
/// Events, where browsers cannot set headers). Checks the signature, `exp` (required),
/// `nbf`, and the issuer and audience when configured. A request without a token is
/// anonymous; one with a token that fails any check gets 401.
pub struct JwtAuthenticator {
    /// The parsed verifying key.
    key: DecodingKey,
    /// What the token must satisfy.
    validation: Validation,
    /// See [`JwtOptions::user_id_claim`].
    user_id_claim: String,
}

impl JwtAuthenticator {
    /// An authenticator with `options`.
    ///
    /// # Errors
    ///
    /// [`JwtError::Key`] when the key is not a PEM public key of the algorithm's kind
    /// (RS256, ES256), or an HS256 secret shorter than 32 bytes.
    pub fn new(options: JwtOptions) -> Result<Self, JwtError> {
        let key = match options.algorithm {
            // RFC 7518 §3.2: an HS256 key must be at least as long as the hash (256 bits);
            // a shorter one can be guessed offline from any token. ASP.NET Core refuses one
            // too (IDX10720).
            JwtAlgorithm::Hs256 if options.key.0.len() < MIN_HS256_KEY => {
                return Err(JwtError::Key(format!(
                    "an HS256 secret must be at least {MIN_HS256_KEY} bytes (256 bits, RFC 7518); \
                     this one has {}: use e.g. `openssl rand -base64 32`",
                    options.key.0.len()
                )));
            }
            JwtAlgorithm::Hs256 => DecodingKey::from_secret(&options.key.0),
            JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(&options.key.0)
                .map_err(|error| JwtError::Key(format!("not an RSA public key in PEM: {error}")))?,
            JwtAlgorithm::Es256 => DecodingKey::from_ec_pem(&options.key.0)
                .map_err(|error| JwtError::Key(format!("not an EC public key in PEM: {error}")))?,
        };
        let mut validation = Validation::new(options.algorithm.algorithm());
        validation.leeway = options.leeway.as_secs();
        validation.validate_nbf = true;
        if let Some(issuer) = &options.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &options.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Ok(Self {
            key,
            validation,
            user_id_claim: options.user_id_claim,
        })
    }

    /// The principal `token` proves.
    ///
    /// # Errors
    ///
    /// A 401 [`AuthError`] saying which check failed (never quoting the token).
    pub fn validate(&self, token: &str) -> Result<Principal, AuthError> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|error| AuthError::unauthorized(describe(error.kind())))?;
        let claims = data.claims;
        let user_id = match claims.get(&self.user_id_claim) {
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            _ => None,
        };
        let mut principal = Principal::new(user_id);
        if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
            principal = principal.with_expiry(UNIX_EPOCH + Duration::from_secs(exp));
        }
        Ok(principal.with_claims(claims))
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate<'a>(&'a self, request: &'a Parts) -> AuthFuture<'a> {
        let result = match crate::access_token(request) {
            None => Ok(None),
            Some(token) => self.validate(&token).map(Some),
        };
        Box::pin(std::future::ready(result))
    }
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("algorithms", &self.validation.algorithms)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("leeway", &self.validation.leeway)
            .field("user_id_claim", &self.user_id_claim)
            .finish_non_exhaustive()
    }
}

/// What the client is told about a token that failed `kind`.
fn describe(kind: &ErrorKind) -> String {
    let what = match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidSignature => "the token's signature is invalid",
        ErrorKind::InvalidAudience => "the token is not for this audience",
        ErrorKind::InvalidIssuer => "the token is not from the expected issuer",
        ErrorKind::InvalidAlgorithm => "the token is signed with another algorithm",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim (exp)",
        _ => "the token is not a well-formed JWT",
    };
    format!("Invalid bearer token: {what}.")
}

/// Seconds since the Unix epoch, for tests that mint tokens.
#[cfg(test)]
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &[u8] = b"a secret of the test, long enough";

    #[test]
    fn a_short_hs256_secret_is_refused() {
        let short = JwtOptions::new(JwtAlgorithm::Hs256, JwtKey::from_bytes("abc"));
        let Err(error) = JwtAuthenticator::new(short) else {
            panic!("a 3-byte HS256 secret was accepted");
        };
        assert!(
            error.to_string().contains("at least 32 bytes") && error.to_string().contains("has 3"),
            "{error}"
        );
        let enough = JwtOptions::new(JwtAlgorithm::Hs256, JwtKey::from_bytes([7u8; 32]));
        assert!(JwtAuthenticator::new(enough).is_ok());
    }

    fn token(claims: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn authenticator() -> JwtAuthenticator {
        JwtAuthenticator::new(
            JwtOptions::new(JwtAlgorithm::Hs256, JwtKey::from_bytes(SECRET))
                .issuer("iss")
                .audience("aud")
                .leeway(Duration::from_secs(5)),
        )
        .unwrap()
    }

    #[test]
    fn validates_signature_expiry_issuer_and_audience() {
        let jwt = authenticator();
        let now = now_secs();
        let good = json_claims("ann", "iss", "aud", now + 60);
        let principal = jwt.validate(&token(&good)).unwrap();
        assert_eq!(principal.user_id(), Some("ann"));
        assert!(principal.expires_at().is_some());
        let fail = |claims: Value| jwt.validate(&token(&claims)).unwrap_err().to_string();
        assert!(fail(json_claims("ann", "iss", "aud", now - 60)).contains("expired"));
        assert!(fail(json_claims("ann", "other", "aud", now + 60)).contains("issuer"));
        assert!(fail(json_claims("ann", "iss", "other", now + 60)).contains("audience"));
        assert!(
            fail(serde_json::json!({"sub": "ann", "iss": "iss", "aud": "aud"})).contains("exp")
        );
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json_claims("ann", "iss", "aud", now + 60),
            &EncodingKey::from_secret(b"another secret"),
        )
        .unwrap();
        let refused = jwt.validate(&forged).unwrap_err().to_string();
        assert!(refused.contains("signature"), "{refused}");
        assert!(!refused.contains(&forged));
        assert!(
            jwt.validate("not.a.jwt")
                .unwrap_err()
                .to_string()
                .contains("well-formed")
        );
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let key = JwtKey::from_bytes(SECRET);
        assert!(!format!("{key:?}").contains("secret"));
        assert!(JwtAuthenticator::new(JwtOptions::new(JwtAlgorithm::Rs256, key)).is_err());
    }

    fn json_claims(sub: &str, iss: &str, aud: &str, exp: u64) -> Value {
        serde_json::json!({ "sub": sub, "iss": iss, "aud": aud, "exp": exp })
    }
}
