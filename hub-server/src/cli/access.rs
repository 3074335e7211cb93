//! The binary's flags for who may connect and how much any client may make it hold:
//! JWT authentication, CORS origins, and the connection and negotiation limits.

use std::path::PathBuf;
use std::time::Duration;

use hub_server::{
    AllowedOrigins, HubBuilder, HubOptions, JwtAlgorithm, JwtAuthenticator, JwtKey, JwtOptions,
};

/// `--jwt-algorithm` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Algorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSA-SHA256 with a PEM public key.
    Rs256,
    /// ECDSA P-256 with a PEM public key.
    Es256,
}

/// Authentication, CORS and limits.
#[derive(Debug, clap::Args)]
pub(crate) struct AccessFlags {
    /// Validate JWT bearer tokens signed with this algorithm (with --jwt-key-file or
    /// --jwt-key-env). Without a key the chat is anonymous-with-a-name: the access token a
    /// client sends is its display name, unverified (a token shaped like a JWT is refused
    /// as a name).
    #[arg(long, value_enum, default_value_t = Algorithm::Hs256)]
    jwt_algorithm: Algorithm,
    /// File holding the JWT key: the HS256 secret (at least 32 bytes, as RFC 7518 and
    /// ASP.NET Core require), or the RS256/ES256 public key in PEM (trailing white space
    /// ignored). Turns authentication on: clients without a valid token get 401.
    #[arg(long, conflicts_with = "jwt_key_env")]
    jwt_key_file: Option<PathBuf>,
    /// Name of the environment variable holding the JWT key (as --jwt-key-file).
    #[arg(long)]
    jwt_key_env: Option<String>,
    /// The `iss` every token must carry.
    #[arg(long)]
    jwt_issuer: Option<String>,
    /// The `aud` every token must carry.
    #[arg(long)]
    jwt_audience: Option<String>,
    /// The claim that is the user id.
    #[arg(long, default_value = "sub")]
    jwt_user_claim: String,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    #[arg(long, default_value_t = 300)]
    jwt_leeway_seconds: u64,
    /// Close each connection when its token expires (the client may reconnect with a
    /// fresh one), as ASP.NET Core's CloseOnAuthenticationExpiration.
    #[arg(long)]
    close_on_token_expiry: bool,
    /// Origins (`https://app.example`) whose pages may use the hub from a browser besides
    /// this server's own, separated by commas; they get CORS with credentials. `*` allows
    /// any origin without credentials. Default: none (same-origin only; the chat page is
    /// served by this server). Browser requests (those with an Origin header, WebSocket
    /// upgrades included) from other origins get 403.
    #[arg(long, default_value = "")]
    cors_origins: String,
    /// Connections this server serves at once; past it negotiate and connect get 503
    /// with Retry-After.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Connection tokens from negotiate that may wait for their connection at once; past
    /// it negotiate gets 503 with Retry-After.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_pending_negotiations: u64,
    /// Longest user id (bytes); a longer one gets 401.
    #[arg(long, default_value_t = 256)]
    max_user_id_bytes: usize,
    /// Seconds a connection token from negotiate waits for its connection.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
    negotiate_timeout: u32,
}

impl AccessFlags {
    /// `options` with the flags' limits and origins.
    pub(crate) fn options(&self, options: HubOptions) -> HubOptions {
        options
            .max_connections(usize::try_from(self.max_connections).unwrap_or(usize::MAX))
            .max_pending_negotiations(
                usize::try_from(self.max_pending_negotiations).unwrap_or(usize::MAX),
            )
            .max_user_id_bytes(self.max_user_id_bytes)
            .negotiate_timeout(Duration::from_secs(u64::from(self.negotiate_timeout)))
            .close_on_authentication_expiration(self.close_on_token_expiry)
            .allowed_origins(AllowedOrigins::parse(&self.cors_origins))
    }

    /// `builder` with JWT authentication when a key is given.
    ///
    /// # Errors
    ///
    /// When the key cannot be read or parsed, or JWT flags come without a key.
    pub(crate) fn authenticate(&self, builder: HubBuilder) -> Result<HubBuilder, String> {
        let key = match (&self.jwt_key_file, &self.jwt_key_env) {
            (Some(path), _) => JwtKey::from_file(path),
            (None, Some(name)) => JwtKey::from_env(name),
            (None, None) => {
                if self.jwt_issuer.is_some() || self.jwt_audience.is_some() {
                    return Err("--jwt-issuer and --jwt-audience need a key: pass --jwt-key-file or --jwt-key-env".into());
                }
                tracing::warn!(
                    "no --jwt-key-file or --jwt-key-env: user ids are the names clients send as their access token, unverified (anyone may use any name)"
                );
                return Ok(builder);
            }
        }
        .map_err(|error| error.to_string())?;
        let algorithm = match self.jwt_algorithm {
            Algorithm::Hs256 => JwtAlgorithm::Hs256,
            Algorithm::Rs256 => JwtAlgorithm::Rs256,
            Algorithm::Es256 => JwtAlgorithm::Es256,
        };
        let mut options = JwtOptions::new(algorithm, key)
            .leeway(Duration::from_secs(self.jwt_leeway_seconds))
            .user_id_claim(self.jwt_user_claim.as_str());
        if let Some(issuer) = &self.jwt_issuer {
            options = options.issuer(issuer.as_str());
        }
        if let Some(audience) = &self.jwt_audience {
            options = options.audience(audience.as_str());
        }
        let authenticator = JwtAuthenticator::new(options).map_err(|error| error.to_string())?;
        tracing::info!(
            ?authenticator,
            "JWT bearer authentication on: anonymous clients are refused"
        );
        Ok(builder
            .authenticator(authenticator)
            .require_authentication())
    }
}
