//! API keys with scopes, shared by REST, WebSocket and gRPC. Auth is off when no key is configured.
//!
//! Keys come from `--api-key KEY:scope1,scope2` (repeatable) or `CROSSL_API_KEYS="k1:ingest;k2:read,ingest"`.
//! Clients send `authorization: Bearer KEY` (HTTP header or gRPC metadata); WebSocket routes also accept
//! `?access_token=KEY` because browsers cannot set headers on a WebSocket.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::app::Core;
use crate::error::Error;
use crate::ingest::Transport;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Send data: gRPC Ingest, WebSocket device ingest, POST /v1/predict, v2 infer.
    Ingest,
    /// Read predictions and model/device info: gRPC Predictions, WebSocket feed, GET /v1/…, GET /v2/models/….
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Read => "read",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "ingest" => Some(Self::Ingest),
            "read" => Some(Self::Read),
            _ => None,
        }
    }
}

/// Why a request was refused; `reason()` is the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    MissingKey,
    WrongKey,
    MissingScope(Scope),
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingKey => "missing_key",
            Self::WrongKey => "wrong_key",
            Self::MissingScope(_) => "missing_scope",
        }
    }
}

impl From<AuthFailure> for Error {
    fn from(f: AuthFailure) -> Self {
        match f {
            AuthFailure::MissingKey => {
                Error::Unauthenticated("missing API key: send `authorization: Bearer <key>`".into())
            }
            AuthFailure::WrongKey => Error::Unauthenticated("unknown API key".into()),
            AuthFailure::MissingScope(scope) => Error::PermissionDenied(format!(
                "this API key lacks the `{}` scope",
                scope.as_str()
            )),
        }
    }
}

#[derive(Debug)]
struct Key {
    /// SHA-256 of the key: keys are compared digest to digest in constant time, never as plain strings.
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

/// The configured keys; cloning is cheap. Empty = auth off.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    keys: Arc<Vec<Key>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiKeys {
    /// Parses `KEY:scope1,scope2` specs. A spec may hold several keys separated by `;`, or by `,` when the
    /// next item has its own `:` (so `CROSSL_API_KEYS=a:ingest,read,b:read` works too). Keys must not
    /// contain `:`, `,`, `;` or whitespace.
    pub fn parse(specs: &[String]) -> Result<Self, String> {
        let mut keys = Vec::new();
        for spec in specs {
            for group in spec.split(';').map(str::trim).filter(|g| !g.is_empty()) {
                let mut current: Option<(String, Vec<Scope>)> = None;
                for item in group.split(',').map(str::trim) {
                    if let Some((key, scope)) = item.split_once(':') {
                        if let Some(done) = current.take() {
                            keys.push(done);
                        }
                        let key = key.trim();
                        if key.is_empty() || key.chars().any(char::is_whitespace) {
                            return Err(format!(
                                "API key spec {group:?}: empty key or key with whitespace"
                            ));
                        }
                        current = Some((key.to_string(), Vec::new()));
                        if scope.trim().is_empty() {
                            continue;
                        }
                        let scope = Scope::parse(scope).ok_or_else(|| {
                            format!(
                                "API key spec {group:?}: unknown scope {scope:?} (ingest, read)"
                            )
                        })?;
                        if let Some((_, scopes)) = current.as_mut() {
                            scopes.push(scope);
                        }
                    } else {
                        let Some((_, scopes)) = current.as_mut() else {
                            return Err(format!(
                                "API key spec {group:?}: expected KEY:scope1,scope2"
                            ));
                        };
                        let scope = Scope::parse(item).ok_or_else(|| {
                            format!("API key spec {group:?}: unknown scope {item:?} (ingest, read)")
                        })?;
                        scopes.push(scope);
                    }
                }
                if let Some(done) = current.take() {
                    keys.push(done);
                }
            }
        }
        let mut parsed = Vec::with_capacity(keys.len());
        for (key, scopes) in keys {
            if scopes.is_empty() {
                return Err(format!(
                    "API key {}…: no scope given (ingest, read)",
                    &key[..key.len().min(4)]
                ));
            }
            parsed.push(Key {
                digest: digest(&key),
                scopes,
            });
        }
        Ok(Self {
            keys: Arc::new(parsed),
        })
    }

    /// Whether any key is configured (else every request is allowed).
    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checks a presented token (`None` = none sent) for `scope`.
    pub fn check(&self, token: Option<&str>, scope: Scope) -> Result<(), AuthFailure> {
        if !self.is_enabled() {
            return Ok(());
        }
        let token = token.ok_or(AuthFailure::MissingKey)?;
        let presented = digest(token);
        // Visit every key so the time taken does not depend on which one matched.
        let mut matched: Option<&Key> = None;
        for key in self.keys.iter() {
            if constant_time_eq(&key.digest, &presented) {
                matched = Some(key);
            }
        }
        let key = matched.ok_or(AuthFailure::WrongKey)?;
        if key.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(AuthFailure::MissingScope(scope))
        }
    }
}

/// The token of an `authorization: Bearer …` header (scheme case-insensitive).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `access_token` from a raw query string (WebSocket routes only).
fn query_access_token(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
}

/// The scope an HTTP route needs; `None` = open (health, readiness, OpenAPI).
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    let open = matches!(
        path,
        "/healthz" | "/readyz" | "/openapi.json" | "/v2/health/live" | "/v2/health/ready" | "/v2"
    ) || (path.starts_with("/v2/models/") && path.ends_with("/ready"));
    if open {
        return None;
    }
    let ingest = path.starts_with("/v1/ws/devices/")
        || (method == Method::POST
            && (matches!(path, "/v1/predict" | "/v1/embed")
                || (path.starts_with("/v2/models/") && path.ends_with("/infer"))));
    Some(if ingest { Scope::Ingest } else { Scope::Read })
}

/// Counts and converts an auth failure.
pub fn refuse(core: &Core, transport: Transport, failure: AuthFailure) -> Error {
    core.metrics
        .auth_failures
        .with_label_values(&[transport.as_str(), failure.reason()])
        .inc();
    failure.into()
}

/// axum middleware enforcing [`required_scope`] on every HTTP route (REST and WebSocket upgrades).
pub async fn http_auth(State(core): State<Core>, request: Request, next: Next) -> Response {
    if !core.auth.is_enabled() {
        return next.run(request).await;
    }
    let path = request.uri().path();
    let Some(scope) = required_scope(request.method(), path) else {
        return next.run(request).await;
    };
    let is_ws = path.starts_with("/v1/ws/");
    let transport = if is_ws {
        Transport::WebSocket
    } else {
        Transport::Rest
    };
    let from_query = if is_ws {
        query_access_token(request.uri().query())
    } else {
        None
    };
    let token = bearer_token(request.headers())
        .map(str::to_owned)
        .or(from_query);
    match core.auth.check(token.as_deref(), scope) {
        Ok(()) => next.run(request).await,
        Err(failure) => refuse(&core, transport, failure).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(specs: &[&str]) -> ApiKeys {
        ApiKeys::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn no_keys_means_auth_off() {
        let k = keys(&[]);
        assert!(!k.is_enabled());
        assert_eq!(k.check(None, Scope::Ingest), Ok(()));
    }

    #[test]
    fn parses_repeated_flags_and_env_lists() {
        let k = keys(&["dev:ingest", "dash:read", "ops:ingest,read"]);
        assert_eq!(k.check(Some("dev"), Scope::Ingest), Ok(()));
        assert_eq!(
            k.check(Some("dev"), Scope::Read),
            Err(AuthFailure::MissingScope(Scope::Read))
        );
        assert_eq!(k.check(Some("dash"), Scope::Read), Ok(()));
        assert_eq!(k.check(Some("ops"), Scope::Read), Ok(()));
        assert_eq!(k.check(Some("ops"), Scope::Ingest), Ok(()));
        let env = keys(&["a:ingest,read;b:read", "c:ingest,d:read"]);
        assert_eq!(env.check(Some("a"), Scope::Read), Ok(()));
        assert_eq!(
            env.check(Some("b"), Scope::Ingest),
            Err(AuthFailure::MissingScope(Scope::Ingest))
        );
        assert_eq!(env.check(Some("c"), Scope::Ingest), Ok(()));
        assert_eq!(
            env.check(Some("c"), Scope::Read),
            Err(AuthFailure::MissingScope(Scope::Read))
        );
        assert_eq!(env.check(Some("d"), Scope::Read), Ok(()));
    }

    #[test]
    fn wrong_and_missing_keys() {
        let k = keys(&["secret:ingest"]);
        assert_eq!(k.check(None, Scope::Ingest), Err(AuthFailure::MissingKey));
        assert_eq!(
            k.check(Some("secreT"), Scope::Ingest),
            Err(AuthFailure::WrongKey)
        );
        assert_eq!(k.check(Some(""), Scope::Ingest), Err(AuthFailure::WrongKey));
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "nokey",
            ":ingest",
            "k:",
            "k:write",
            "k:ingest,admin",
            "ingest",
            "a b:read",
        ] {
            assert!(
                ApiKeys::parse(&[bad.to_string()]).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn failures_map_to_401_and_403_kinds() {
        assert_eq!(Error::from(AuthFailure::WrongKey).kind(), "unauthenticated");
        assert_eq!(
            Error::from(AuthFailure::MissingKey).kind(),
            "unauthenticated"
        );
        assert_eq!(
            Error::from(AuthFailure::MissingScope(Scope::Read)).kind(),
            "permission_denied"
        );
    }

    #[test]
    fn bearer_header_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert("authorization", "bearer  xyz ".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("xyz"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
    }

    #[test]
    fn access_token_from_query() {
        assert_eq!(
            query_access_token(Some("device=a&access_token=k%3Ax")).as_deref(),
            Some("k:x")
        );
        assert_eq!(query_access_token(Some("device=a")), None);
        assert_eq!(query_access_token(None), None);
    }

    #[test]
    fn route_scopes() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required_scope(&get, "/healthz"), None);
        assert_eq!(required_scope(&get, "/readyz"), None);
        assert_eq!(required_scope(&get, "/openapi.json"), None);
        assert_eq!(required_scope(&get, "/v2/health/ready"), None);
        assert_eq!(required_scope(&get, "/v2/models/crossl-dsads/ready"), None);
        assert_eq!(required_scope(&post, "/v1/predict"), Some(Scope::Ingest));
        assert_eq!(
            required_scope(&post, "/v2/models/crossl-dsads/infer"),
            Some(Scope::Ingest)
        );
        assert_eq!(
            required_scope(&get, "/v1/ws/devices/d1"),
            Some(Scope::Ingest)
        );
        assert_eq!(
            required_scope(&get, "/v1/ws/predictions"),
            Some(Scope::Read)
        );
        assert_eq!(required_scope(&get, "/v1/devices"), Some(Scope::Read));
        assert_eq!(
            required_scope(&get, "/v1/devices/d1/prediction"),
            Some(Scope::Read)
        );
        assert_eq!(required_scope(&get, "/v1/model"), Some(Scope::Read));
        // Anything unlisted needs a key too (safe default).
        assert_eq!(required_scope(&get, "/v1/unknown"), Some(Scope::Read));
    }
}
