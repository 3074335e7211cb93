//! Who may connect, and who may call what: authentication on negotiate and on every
//! transport request, and authorization rules for the hub and for single methods.
//!
//! An [`Authenticator`] turns a request into a [`Principal`] (or none: anonymous), or
//! refuses it (401). [`JwtAuthenticator`] is the built-in one: JWT bearer tokens from the
//! `Authorization` header or the `access_token` query parameter. Rules are closures over
//! the principal ([`Policy`]), set on the [`HubBuilder`](crate::HubBuilder): for the whole
//! hub (checked on negotiate and connect: 401 without a principal, 403 when a rule says
//! no, as ASP.NET Core's `[Authorize]` on a hub class) and per method (checked on each
//! invocation: a completion error, as `[Authorize]` on a hub method). Hub methods read the
//! principal through the [`Claims`] parameter.

mod jwt;

pub use jwt::{JwtAlgorithm, JwtAuthenticator, JwtError, JwtKey, JwtOptions};

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::extract::{BindError, FromInvocation, InvocationContext};
use crate::identity::UserIdProvider;

/// Who a connection authenticated as: its user id and the claims that proved it.
///
/// `Debug` shows the user id and the claim names, never their values.
#[derive(Clone)]
pub struct Principal {
    /// What [`Clients::user`](crate::Clients::user) targets; `None` for a principal
    /// without one (a service token without a subject, say).
    user_id: Option<String>,
    /// Everything the authenticator vouches for (a JWT's payload).
    claims: Map<String, Value>,
    /// When the credentials stop being valid (a JWT's `exp`): with
    /// [`HubOptions::close_on_authentication_expiration`](crate::HubOptions::close_on_authentication_expiration)
    /// the connection is closed then.
    expires_at: Option<SystemTime>,
}

impl Principal {
    /// A principal with `user_id`, no claims and no expiry.
    pub fn new(user_id: Option<String>) -> Self {
        Self {
            user_id,
            claims: Map::new(),
            expires_at: None,
        }
    }

    /// This principal with `claims`.
    #[must_use]
    pub fn with_claims(mut self, claims: Map<String, Value>) -> Self {
        self.claims = claims;
        self
    }

    /// This principal, valid until `at`.
    #[must_use]
    pub fn with_expiry(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The user id.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// Every claim.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The claim `name`.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }

    /// Whether the claim `name` is `value`, or is an array holding `value` (as JWT role
    /// claims often are).
    pub fn has_claim(&self, name: &str, value: &str) -> bool {
        match self.claims.get(name) {
            Some(Value::String(text)) => text == value,
            Some(Value::Array(items)) => items.iter().any(|item| item.as_str() == Some(value)),
            _ => false,
        }
    }

    /// When the credentials expire, if they do.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("user_id", &self.user_id)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a request was refused: its credentials are missing or invalid (401), or valid but
/// not allowed (403). The reason is sent to the client and logged at debug level, so it
/// must never quote the credentials themselves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct AuthError {
    /// 401 or 403.
    status: StatusCode,
    /// What the client is told.
    reason: String,
}

impl AuthError {
    /// 401: the credentials are missing, malformed, expired or do not verify.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            reason: reason.into(),
        }
    }

    /// 403: the credentials are valid but do not allow this.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
        }
    }

    /// The HTTP status the request gets.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.reason).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

/// The future an [`Authenticator`] returns.
pub type AuthFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Principal>, AuthError>> + Send + 'a>>;

/// Decides who a request comes from. Runs on negotiate and on every request of every
/// transport (the WebSocket upgrade, the Server-Sent Events `GET`, each long-polling `GET`,
/// `POST` and `DELETE`), before anything else happens to the request.
///
/// `Ok(Some(principal))`: authenticated. `Ok(None)`: anonymous (no credentials); allowed
/// unless the hub requires authentication. `Err`: refused with the error's status, even on
/// a hub that allows anonymous connections: credentials that were sent but do not verify
/// never silently become an anonymous connection.
///
/// Dyn-compatible; plain functions and closures `Fn(&Parts) -> Result<Option<Principal>,
/// AuthError>` implement it.
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticate the request whose head is `request`.
    fn authenticate<'a>(&'a self, request: &'a Parts) -> AuthFuture<'a>;
}

impl<F> Authenticator for F
where
    F: Fn(&Parts) -> Result<Option<Principal>, AuthError> + Send + Sync + 'static,
{
    fn authenticate<'a>(&'a self, request: &'a Parts) -> AuthFuture<'a> {
        let result = self(request);
        Box::pin(std::future::ready(result))
    }
}

/// An authorization rule: whether a principal may connect to the hub, or call a method.
pub type Policy = Arc<dyn Fn(&Principal) -> bool + Send + Sync>;

/// A hub's authentication and authorization settings.
#[derive(Default, Clone)]
pub(crate) struct AuthSettings {
    /// Runs on every request; none: every connection is anonymous (or named by the user
    /// id hook).
    pub(crate) authenticator: Option<Arc<dyn Authenticator>>,
    /// Whether connecting needs a principal (ASP.NET Core's `[Authorize]` on the hub).
    pub(crate) require_authentication: bool,
    /// Rules every connecting principal must pass.
    pub(crate) hub_policies: Vec<Policy>,
    /// Rules per method, by name in ASCII lower case (methods are matched ignoring case).
    pub(crate) method_policies: HashMap<String, Vec<Policy>>,
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("authenticator", &self.authenticator.is_some())
            .field("require_authentication", &self.require_authentication)
            .field("hub_policies", &self.hub_policies.len())
            .field(
                "methods_with_policies",
                &self.method_policies.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Who a request is, once authenticated and allowed in.
#[derive(Debug, Default)]
pub(crate) struct Identity {
    /// The user id: the principal's, or else the user id hook's.
    pub(crate) user: Option<String>,
    /// What the authenticator vouched for.
    pub(crate) principal: Option<Arc<Principal>>,
}

/// Authenticate `request` to hub `hub` and apply its rules and the user id limit; the
/// answer to send instead when it is refused (see `HubShared::identify`).
pub(crate) async fn identify(
    hub: &str,
    auth: &AuthSettings,
    user_id: Option<&UserIdProvider>,
    max_user_id_bytes: usize,
    request: &Parts,
) -> Result<Identity, Response> {
    identify_with(auth, user_id, max_user_id_bytes, request)
        .await
        .map_err(|error| {
            tracing::debug!(%hub, status = %error.status, reason = %error.reason, "request refused");
            error.into_response()
        })
}

async fn identify_with(
    auth: &AuthSettings,
    user_id: Option<&UserIdProvider>,
    max_user_id_bytes: usize,
    request: &Parts,
) -> Result<Identity, AuthError> {
    let principal = match &auth.authenticator {
        Some(authenticator) => authenticator.authenticate(request).await?,
        None => None,
    };
    let user = match &principal {
        Some(principal) => principal.user_id.clone(),
        None => {
            if auth.require_authentication || !auth.hub_policies.is_empty() {
                return Err(AuthError::unauthorized(
                    "Authentication required: send a bearer token (the Authorization header, or the access_token query parameter).",
                ));
            }
            user_id.and_then(|provider| provider(request))
        }
    };
    if let Some(principal) = &principal
        && !auth.hub_policies.iter().all(|policy| policy(principal))
    {
        return Err(AuthError::forbidden(
            "Forbidden: this user may not connect to this hub.",
        ));
    }
    if let Some(user) = &user
        && user.len() > max_user_id_bytes
    {
        return Err(AuthError::unauthorized(format!(
            "The user id is longer than {max_user_id_bytes} bytes."
        )));
    }
    Ok(Identity {
        user,
        principal: principal.map(Arc::new),
    })
}

/// Whether the method registered as `method` may be called by a connection with
/// `principal`.
pub(crate) fn may_invoke(auth: &AuthSettings, method: &str, principal: Option<&Principal>) -> bool {
    // Keys are lower case. Most hubs have no method policy: no lookup (and no
    // lower-cased copy of the name) on their invocations.
    if auth.method_policies.is_empty() {
        return true;
    }
    let Some(policies) = auth.method_policies.get(&method.to_ascii_lowercase()) else {
        return true;
    };
    principal.is_some_and(|principal| policies.iter().all(|policy| policy(principal)))
}

/// The timer that ends a connection when its credentials expire: `None` unless
/// `enabled` and the principal has an expiry. Boxed, so connections without one pay
/// nothing in the future every idle connection holds.
pub(crate) fn expiry_timer(
    principal: Option<&Principal>,
    enabled: bool,
) -> Option<Pin<Box<tokio::time::Sleep>>> {
    let at = principal
        .and_then(Principal::expires_at)
        .filter(|_| enabled)?;
    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
    Some(Box::pin(tokio::time::sleep(left)))
}

/// Completes when `timer` fires; never without one.
pub(crate) async fn expired(timer: Option<Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(timer) => timer.await,
        None => std::future::pending().await,
    }
}

/// The calling connection's principal, as a hub method parameter: its user id and claims,
/// or nothing for an anonymous connection. Takes no invocation argument.
///
/// ```
/// use hub_server::{Claims, MethodError};
///
/// async fn whoami(claims: Claims) -> Result<String, MethodError> {
///     let principal = claims.principal().ok_or_else(|| MethodError::new("anonymous"))?;
///     Ok(principal.user_id().unwrap_or("?").to_owned())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Claims(Option<Arc<Principal>>);

impl Claims {
    /// The principal; `None` for an anonymous connection.
    pub fn principal(&self) -> Option<&Principal> {
        self.0.as_deref()
    }

    /// Whether the connection authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.0.is_some()
    }

    /// The claim `name`, if the connection authenticated and has it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.as_ref()?.claim(name)
    }
}

impl FromInvocation for Claims {
    const ARGUMENTS: usize = 0;

    fn from_invocation(context: &mut InvocationContext) -> Result<Self, BindError> {
        Ok(Claims(context.connection.principal.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(uri: &str) -> Parts {
        Request::get(uri).body(()).unwrap().into_parts().0
    }

    fn by_query(request: &Parts) -> Result<Option<Principal>, AuthError> {
        match crate::access_token(request).as_deref() {
            None => Ok(None),
            Some("bad") => Err(AuthError::unauthorized("bad token")),
            Some(name) => Ok(Some(
                Principal::new(Some(name.to_owned())).with_claims(
                    serde_json::json!({ "role": ["admin", "x"] })
                        .as_object()
                        .unwrap()
                        .clone(),
                ),
            )),
        }
    }

    #[tokio::test]
    async fn identities_follow_the_rules() {
        let mut auth = AuthSettings {
            authenticator: Some(Arc::new(by_query)),
            ..AuthSettings::default()
        };
        let hook: UserIdProvider = Arc::new(|_: &Parts| Some("from-hook".to_owned()));
        let identity = identify_with(&auth, Some(&hook), 8, &parts("/h?access_token=ann"))
            .await
            .unwrap();
        assert_eq!(identity.user.as_deref(), Some("ann"));
        assert!(identity.principal.unwrap().has_claim("role", "admin"));
        // Anonymous falls back to the hook; invalid credentials never do.
        let anonymous = identify_with(&auth, Some(&hook), 64, &parts("/h"))
            .await
            .unwrap();
        assert_eq!(anonymous.user.as_deref(), Some("from-hook"));
        let refused = identify_with(&auth, Some(&hook), 64, &parts("/h?access_token=bad"))
            .await
            .unwrap_err();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        // The user id limit.
        let long = identify_with(&auth, None, 8, &parts("/h?access_token=nine-char"))
            .await
            .unwrap_err();
        assert_eq!(long.status(), StatusCode::UNAUTHORIZED);
        // Hub rules: anonymous gets 401, a principal that fails them 403.
        auth.hub_policies.push(Arc::new(|principal: &Principal| {
            principal.has_claim("role", "x")
        }));
        assert_eq!(
            identify_with(&auth, None, 64, &parts("/h"))
                .await
                .unwrap_err()
                .status(),
            StatusCode::UNAUTHORIZED
        );
        auth.hub_policies.push(Arc::new(|principal: &Principal| {
            principal.has_claim("role", "root")
        }));
        assert_eq!(
            identify_with(&auth, None, 64, &parts("/h?access_token=ann"))
                .await
                .unwrap_err()
                .status(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn method_rules_match_names_ignoring_case() {
        let mut auth = AuthSettings::default();
        auth.method_policies.insert(
            "admin".into(),
            vec![Arc::new(|principal: &Principal| {
                principal.has_claim("role", "admin")
            })],
        );
        let admin = Principal::new(None).with_claims(
            serde_json::json!({"role": "admin"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let other = Principal::new(None);
        assert!(may_invoke(&auth, "Admin", Some(&admin)));
        assert!(!may_invoke(&auth, "ADMIN", Some(&other)));
        assert!(!may_invoke(&auth, "admin", None));
        assert!(may_invoke(&auth, "Other", None));
    }
}
