//! API keys with scopes and optional device ownership, shared by REST, WebSocket and gRPC. Auth is off when
//! no key is configured.
//!
//! Keys come from `--api-key KEY:scope1,scope2[:DEVICE_GLOB]` (repeatable) or
//! `CROSSL_API_KEYS="k1:ingest;k2:read,ingest:ward-3-*"`. A key with a device glob may only send data for,
//! and read, device ids matching it (`*` any run of characters, `?` one character); a key without one may
//! use every device.
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
    /// The key is bound to device ids that do not include this one.
    DeviceNotAllowed,
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingKey => "missing_key",
            Self::WrongKey => "wrong_key",
            Self::MissingScope(_) => "missing_scope",
            Self::DeviceNotAllowed => "device_not_allowed",
        }
    }
}

/// A device-id pattern: `*` matches any run of characters (also none), `?` exactly one; everything else
/// matches itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceGlob {
    pattern: String,
}

impl DeviceGlob {
    /// A pattern of device-id characters (`[A-Za-z0-9._:-]`) and `*` / `?`.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err("empty device glob".into());
        }
        if let Some(c) = pattern.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-' | '*' | '?'))
        }) {
            return Err(format!(
                "device glob {pattern:?} contains {c:?}; allowed are device-id characters, * and ?"
            ));
        }
        Ok(Self {
            pattern: pattern.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `id` matches (linear-time backtracking over the last `*`; ids and patterns are ASCII).
    pub fn matches(&self, id: &str) -> bool {
        let (p, t) = (self.pattern.as_bytes(), id.as_bytes());
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

/// What an accepted request may touch: which key it used (for per-key limits) and which devices. Handed
/// to the adapters in the request's extensions; absent (auth off) = [`Grant::open`].
#[derive(Clone, Debug, Default)]
pub struct Grant {
    /// Index of the key among the configured ones; `None` when auth is off.
    key: Option<usize>,
    devices: Option<Arc<DeviceGlob>>,
}

impl Grant {
    /// Everything allowed (auth off).
    pub fn open() -> Self {
        Self::default()
    }

    /// The key's index among the configured keys (a stable id for per-key limits), if auth is on.
    pub fn key(&self) -> Option<usize> {
        self.key
    }

    /// Whether the key may use `device_id`.
    pub fn allows(&self, device_id: &str) -> bool {
        self.devices.as_ref().is_none_or(|g| g.matches(device_id))
    }

    /// Whether the key is bound to a device glob.
    pub fn is_bound(&self) -> bool {
        self.devices.is_some()
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
            AuthFailure::DeviceNotAllowed => {
                Error::PermissionDenied("this API key may not use this device id".into())
            }
        }
    }
}

#[derive(Debug)]
struct Key {
    /// SHA-256 of the key: keys are compared digest to digest in constant time, never as plain strings.
    digest: [u8; 32],
    scopes: Vec<Scope>,
    devices: Option<Arc<DeviceGlob>>,
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
    /// Parses `KEY:scope1,scope2[:DEVICE_GLOB]` specs. A spec may hold several keys separated by `;`, or by
    /// `,` when the next item has its own `:` (so `CROSSL_API_KEYS=a:ingest,read,b:read` works too). The
    /// device glob follows the last scope and ends the key (`k1:ingest,read:ward-3-*`). Keys must not
    /// contain `:`, `,`, `;` or whitespace; in a `,` list, a key named like a scope must start its own
    /// `;` group (`…,read:x` reads as the scope `read` with the glob `x`).
    pub fn parse(specs: &[String]) -> Result<Self, String> {
        type Pending = (String, Vec<Scope>, Option<DeviceGlob>);
        let mut keys: Vec<Pending> = Vec::new();
        for spec in specs {
            for group in spec.split(';').map(str::trim).filter(|g| !g.is_empty()) {
                let unknown = |scope: &str| {
                    format!("API key spec {group:?}: unknown scope {scope:?} (ingest, read)")
                };
                let glob = |text: &str| {
                    DeviceGlob::parse(text).map_err(|e| format!("API key spec {group:?}: {e}"))
                };
                let mut current: Option<Pending> = None;
                for item in group.split(',').map(str::trim) {
                    let open_without_glob =
                        current.as_ref().is_some_and(|(_, _, glob)| glob.is_none());
                    if let Some(ended) = current.as_ref().filter(|(_, _, g)| g.is_some())
                        && !item.contains(':')
                    {
                        return Err(format!(
                            "API key spec {group:?}: scope {item:?} after the device glob {:?}                              (the glob comes last: KEY:SCOPES:GLOB)",
                            ended.2.as_ref().map_or("", DeviceGlob::as_str)
                        ));
                    }
                    match item.split_once(':') {
                        // `read:ward-3-*`: the key's last scope and its device glob.
                        Some((head, rest)) if open_without_glob && Scope::parse(head).is_some() => {
                            if let Some((_, scopes, devices)) = current.as_mut() {
                                scopes.extend(Scope::parse(head));
                                *devices = Some(glob(rest)?);
                            }
                        }
                        Some((key, rest)) => {
                            if let Some(done) = current.take() {
                                keys.push(done);
                            }
                            let key = key.trim();
                            if key.is_empty() || key.chars().any(char::is_whitespace) {
                                return Err(format!(
                                    "API key spec {group:?}: empty key or key with whitespace"
                                ));
                            }
                            let (scope, devices) = match rest.split_once(':') {
                                Some((scope, pattern)) => (scope, Some(glob(pattern)?)),
                                None => (rest, None),
                            };
                            let mut scopes = Vec::new();
                            if !scope.trim().is_empty() {
                                scopes.push(Scope::parse(scope).ok_or_else(|| unknown(scope))?);
                            }
                            current = Some((key.to_string(), scopes, devices));
                        }
                        None => {
                            let Some((_, scopes, _)) = current.as_mut() else {
                                return Err(format!(
                                    "API key spec {group:?}: expected KEY:scope1,scope2"
                                ));
                            };
                            scopes.push(Scope::parse(item).ok_or_else(|| unknown(item))?);
                        }
                    }
                }
                if let Some(done) = current.take() {
                    keys.push(done);
                }
            }
        }
        let mut parsed = Vec::with_capacity(keys.len());
        for (key, scopes, devices) in keys {
            if scopes.is_empty() {
                return Err(format!(
                    "API key {}…: no scope given (ingest, read)",
                    &key[..key.len().min(4)]
                ));
            }
            parsed.push(Key {
                digest: digest(&key),
                scopes,
                // `*` alone binds nothing: the key keeps the unbound behaviour.
                devices: devices.filter(|g| g.as_str() != "*").map(Arc::new),
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

    /// Checks a presented token (`None` = none sent) for `scope`; what the key may touch on success.
    pub fn check(&self, token: Option<&str>, scope: Scope) -> Result<Grant, AuthFailure> {
        if !self.is_enabled() {
            return Ok(Grant::open());
        }
        let token = token.ok_or(AuthFailure::MissingKey)?;
        let presented = digest(token);
        // Visit every key so the time taken does not depend on which one matched.
        let mut matched: Option<(usize, &Key)> = None;
        for (index, key) in self.keys.iter().enumerate() {
            if constant_time_eq(&key.digest, &presented) {
                matched = Some((index, key));
            }
        }
        let (index, key) = matched.ok_or(AuthFailure::WrongKey)?;
        if key.scopes.contains(&scope) {
            Ok(Grant {
                key: Some(index),
                devices: key.devices.clone(),
            })
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

/// The scope an HTTP route needs; `None` = open (health, readiness, OpenAPI, status page, Swagger UI).
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    let open = matches!(
        path,
        "/healthz" | "/readyz" | "/openapi.json" | "/v2/health/live" | "/v2/health/ready" | "/v2"
    ) || (path.starts_with("/v2/models/") && path.ends_with("/ready"))
        // The status page, its assets and Swagger UI hold no data (they call the API with a key).
        || super::status::is_open_page(path);
    if open {
        return None;
    }
    // Labelling a device's stream (or dropping its labels) changes what it is answered: the device's own
    // (ingest) scope; reading the labels is a read like the device's other routes.
    let labels_write = matches!(*method, Method::POST | Method::DELETE)
        && path.starts_with("/v1/devices/")
        && path.ends_with("/labels");
    let ingest = path.starts_with("/v1/ws/devices/")
        || labels_write
        || (method == Method::POST
            && (matches!(path, "/v1/predict" | "/v1/embed")
                || (path.starts_with("/v2/models/") && path.ends_with("/infer"))));
    Some(if ingest { Scope::Ingest } else { Scope::Read })
}

/// Refuses (counted as `device_not_allowed`) a device id outside the key's glob; `Ok` when allowed.
pub fn require_device(
    core: &Core,
    transport: Transport,
    grant: &Grant,
    device_id: &str,
) -> Result<(), Error> {
    if grant.allows(device_id) {
        return Ok(());
    }
    core.metrics
        .auth_failures
        .with_label_values(&[transport.as_str(), AuthFailure::DeviceNotAllowed.reason()])
        .inc();
    Err(Error::PermissionDenied(format!(
        "this API key may not use device {device_id:?}"
    )))
}

/// The device a device-scoped HTTP route names (`/v1/devices/{id}…`, `/v1/ws/devices/{id}`), percent-
/// decoded like the router does; `Err` when it does not decode (refused rather than guessed).
fn routed_device(path: &str) -> Option<Result<String, ()>> {
    let rest = path
        .strip_prefix("/v1/devices/")
        .or_else(|| path.strip_prefix("/v1/ws/devices/"))?;
    let segment = rest.split('/').next().unwrap_or_default();
    Some(percent_decode(segment))
}

fn percent_decode(text: &str) -> Result<String, ()> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(())?;
            let hex = std::str::from_utf8(hex).map_err(|_| ())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// The devices a dashboard feed asks for (`?device=a&device=b,c`).
pub fn feed_devices(query: Option<&str>) -> Vec<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "device")
        .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// Counts and converts an auth failure.
pub fn refuse(core: &Core, transport: Transport, failure: AuthFailure) -> Error {
    core.metrics
        .auth_failures
        .with_label_values(&[transport.as_str(), failure.reason()])
        .inc();
    failure.into()
}

/// axum middleware enforcing [`required_scope`] on every HTTP route (REST and WebSocket upgrades), and a
/// bound key's device glob on the routes that name a device (403, before the handler or upgrade). The
/// key's [`Grant`] goes to the handlers in the request extensions (the device list and the dashboard feed
/// filter by it).
pub async fn http_auth(State(core): State<Core>, mut request: Request, next: Next) -> Response {
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
    let grant = match core.auth.check(token.as_deref(), scope) {
        Ok(grant) => grant,
        Err(failure) => return refuse(&core, transport, failure).into_response(),
    };
    if grant.is_bound() {
        let named: Vec<String> = match routed_device(path) {
            Some(Ok(device)) => vec![device],
            Some(Err(())) => {
                return refuse(&core, transport, AuthFailure::DeviceNotAllowed).into_response();
            }
            None if path == "/v1/ws/predictions" => feed_devices(request.uri().query()),
            None => Vec::new(),
        };
        for device in named.iter().map(|d| d.trim()).filter(|d| !d.is_empty()) {
            if let Err(e) = require_device(&core, transport, &grant, device) {
                return e.into_response();
            }
        }
    }
    request.extensions_mut().insert(grant);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ApiKeys {
        fn check_scope(&self, token: Option<&str>, scope: Scope) -> Result<(), AuthFailure> {
            self.check(token, scope).map(|_| ())
        }
    }

    #[test]
    fn device_globs_match_star_and_question_mark() {
        let g = |p: &str| DeviceGlob::parse(p).unwrap();
        assert!(g("ward-3-*").matches("ward-3-"));
        assert!(g("ward-3-*").matches("ward-3-bed-12"));
        assert!(!g("ward-3-*").matches("ward-30-1"));
        assert!(!g("ward-3-*").matches("ward-3"));
        assert!(g("dev-?").matches("dev-a") && !g("dev-?").matches("dev-ab"));
        assert!(g("*-icu-*").matches("north-icu-7") && !g("*-icu-*").matches("north-icu"));
        assert!(g("exact").matches("exact") && !g("exact").matches("exactly"));
        assert!(g("a*b*c").matches("abc") && g("a*b*c").matches("aXbYbZc"));
        assert!(!g("a*b*c").matches("aXbYcZ"));
        assert!(g("**").matches("") && g("*").matches("any"));
        for bad in ["", "ward 3", "ward/3", "a%2A", "x,y"] {
            assert!(DeviceGlob::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn keys_bound_to_a_device_glob() {
        let k = keys(&[
            "k1:ingest,read:ward-3-*",
            "k2:read:icu-?;free:ingest",
            "all:read:*",
        ]);
        let grant = k.check(Some("k1"), Scope::Ingest).unwrap();
        assert!(grant.is_bound() && grant.allows("ward-3-a") && !grant.allows("ward-4-a"));
        assert!(k.check(Some("k1"), Scope::Read).unwrap().allows("ward-3-b"));
        let k2 = k.check(Some("k2"), Scope::Read).unwrap();
        assert!(k2.allows("icu-1") && !k2.allows("icu-12"));
        assert_eq!(
            k.check_scope(Some("k2"), Scope::Ingest),
            Err(AuthFailure::MissingScope(Scope::Ingest))
        );
        let free = k.check(Some("free"), Scope::Ingest).unwrap();
        assert!(!free.is_bound() && free.allows("anything"));
        // `*` is the same as no glob.
        assert!(!k.check(Some("all"), Scope::Read).unwrap().is_bound());
        // Distinct keys have distinct ids (per-key limits); auth off has none.
        assert_ne!(grant.key(), free.key());
        assert_eq!(keys(&[]).check(None, Scope::Read).unwrap().key(), None);
        // The env form with `,` between keys still works next to globs.
        let env = keys(&["a:ingest,read:ward-*,b:read"]);
        assert!(!env.check(Some("a"), Scope::Read).unwrap().allows("x"));
        assert!(env.check(Some("b"), Scope::Read).unwrap().allows("x"));
        for bad in [
            "k:ingest:ward 3",
            "k:ingest:ward-*,read",
            "k:ingest:",
            "k::ward-*",
        ] {
            assert!(
                ApiKeys::parse(&[bad.to_string()]).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn device_routes_are_found_and_decoded() {
        assert_eq!(routed_device("/v1/devices/d-1"), Some(Ok("d-1".into())));
        assert_eq!(
            routed_device("/v1/devices/d%2D1/predictions"),
            Some(Ok("d-1".into()))
        );
        assert_eq!(routed_device("/v1/ws/devices/w"), Some(Ok("w".into())));
        assert_eq!(routed_device("/v1/devices/bad%zz"), Some(Err(())));
        assert_eq!(routed_device("/v1/devices"), None);
        assert_eq!(routed_device("/v1/ws/predictions"), None);
        assert_eq!(
            feed_devices(Some("device=a,b&device=c&x=1")),
            ["a", "b", "c"]
        );
    }

    fn keys(specs: &[&str]) -> ApiKeys {
        ApiKeys::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn no_keys_means_auth_off() {
        let k = keys(&[]);
        assert!(!k.is_enabled());
        assert_eq!(k.check_scope(None, Scope::Ingest), Ok(()));
    }

    #[test]
    fn parses_repeated_flags_and_env_lists() {
        let k = keys(&["dev:ingest", "dash:read", "ops:ingest,read"]);
        assert_eq!(k.check_scope(Some("dev"), Scope::Ingest), Ok(()));
        assert_eq!(
            k.check_scope(Some("dev"), Scope::Read),
            Err(AuthFailure::MissingScope(Scope::Read))
        );
        assert_eq!(k.check_scope(Some("dash"), Scope::Read), Ok(()));
        assert_eq!(k.check_scope(Some("ops"), Scope::Read), Ok(()));
        assert_eq!(k.check_scope(Some("ops"), Scope::Ingest), Ok(()));
        let env = keys(&["a:ingest,read;b:read", "c:ingest,d:read"]);
        assert_eq!(env.check_scope(Some("a"), Scope::Read), Ok(()));
        assert_eq!(
            env.check_scope(Some("b"), Scope::Ingest),
            Err(AuthFailure::MissingScope(Scope::Ingest))
        );
        assert_eq!(env.check_scope(Some("c"), Scope::Ingest), Ok(()));
        assert_eq!(
            env.check_scope(Some("c"), Scope::Read),
            Err(AuthFailure::MissingScope(Scope::Read))
        );
        assert_eq!(env.check_scope(Some("d"), Scope::Read), Ok(()));
    }

    #[test]
    fn wrong_and_missing_keys() {
        let k = keys(&["secret:ingest"]);
        assert_eq!(
            k.check_scope(None, Scope::Ingest),
            Err(AuthFailure::MissingKey)
        );
        assert_eq!(
            k.check_scope(Some("secreT"), Scope::Ingest),
            Err(AuthFailure::WrongKey)
        );
        assert_eq!(
            k.check_scope(Some(""), Scope::Ingest),
            Err(AuthFailure::WrongKey)
        );
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
        assert_eq!(required_scope(&get, "/v1/status"), Some(Scope::Read));
        assert_eq!(required_scope(&get, "/"), None);
        assert_eq!(required_scope(&get, "/ui/app.js"), None);
        assert_eq!(required_scope(&get, "/docs/"), None);
        assert_eq!(
            required_scope(&post, "/v1/devices/d1/labels"),
            Some(Scope::Ingest)
        );
        assert_eq!(
            required_scope(&Method::DELETE, "/v1/devices/d1/labels"),
            Some(Scope::Ingest)
        );
        assert_eq!(
            required_scope(&get, "/v1/devices/d1/labels"),
            Some(Scope::Read)
        );
        // Anything unlisted needs a key too (safe default).
        assert_eq!(required_scope(&get, "/v1/unknown"), Some(Scope::Read));
    }
}
