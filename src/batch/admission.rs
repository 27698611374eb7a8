//! Per-client concurrency limit on one-shot requests: one client (an API key, or a peer address when auth
//! is off) may have at most N one-shot requests in flight; one more is refused at once with 429 rather
//! than queued, so a single caller cannot take the whole one-shot queue from the others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::metrics::Metrics;

/// Who a one-shot request counts against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(String);

impl ClientKey {
    /// With auth on, the API key the request was authenticated with (kept only as a digest prefix); with
    /// auth off, the peer's IP address (a token is ignored then: it would let one client pose as many).
    pub fn new(auth_enabled: bool, api_key: Option<&str>, peer: Option<IpAddr>) -> Self {
        match (auth_enabled, api_key, peer) {
            (true, Some(key), _) => {
                let digest = Sha256::digest(key.as_bytes());
                Self(format!("key:{}", hex::encode(&digest[..8])))
            }
            (_, _, Some(ip)) => Self(format!("peer:{ip}")),
            _ => Self("unknown".into()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Counts in-flight one-shot requests per client; cloning is cheap.
#[derive(Clone, Debug)]
pub struct ClientLimiter {
    /// Most requests in flight per client; 0 = no limit.
    max_per_client: usize,
    active: Arc<Mutex<HashMap<ClientKey, usize>>>,
    metrics: Arc<Metrics>,
}

/// One admitted request; dropping it frees the client's place.
#[derive(Debug)]
pub struct ClientPermit {
    key: Option<ClientKey>,
    active: Arc<Mutex<HashMap<ClientKey, usize>>>,
}

impl ClientLimiter {
    pub fn new(max_per_client: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            max_per_client,
            active: Arc::new(Mutex::new(HashMap::new())),
            metrics,
        }
    }

    /// Takes a place for `client`, or refuses (429, counted as `requests_shed{reason="concurrency_limit"}`).
    pub fn acquire(&self, client: &ClientKey) -> Result<ClientPermit, Error> {
        if self.max_per_client == 0 {
            return Ok(ClientPermit {
                key: None,
                active: Arc::clone(&self.active),
            });
        }
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let count = active.entry(client.clone()).or_insert(0);
        if *count >= self.max_per_client {
            drop(active);
            self.metrics
                .requests_shed
                .with_label_values(&["concurrency_limit"])
                .inc();
            return Err(Error::ResourceExhausted {
                reason: "concurrency_limit",
                message: format!(
                    "this client already has {} one-shot requests in flight (the per-client limit); \
                     retry when one has finished",
                    self.max_per_client
                ),
            });
        }
        *count += 1;
        Ok(ClientPermit {
            key: Some(client.clone()),
            active: Arc::clone(&self.active),
        })
    }

    /// Clients with a request in flight (entries are removed at zero, so rotating clients cannot grow it).
    pub fn clients(&self) -> usize {
        self.active.lock().map_or(0, |a| a.len())
    }
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = active.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                active.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_client_separately_and_forgets_idle_ones() {
        let metrics = Arc::new(Metrics::new(2, 8));
        let limiter = ClientLimiter::new(2, Arc::clone(&metrics));
        let a = ClientKey::new(false, None, Some("10.0.0.1".parse().unwrap()));
        let b = ClientKey::new(false, Some("ignored"), Some("10.0.0.2".parse().unwrap()));
        let p1 = limiter.acquire(&a).expect("first");
        let p2 = limiter.acquire(&a).expect("second");
        let err = limiter.acquire(&a).unwrap_err();
        assert_eq!(
            (err.kind(), err.reason()),
            ("resource_exhausted", "concurrency_limit")
        );
        let _pb = limiter.acquire(&b).expect("another client is not affected");
        drop(p1);
        let p3 = limiter.acquire(&a).expect("a place was freed");
        drop((p2, p3, _pb));
        assert_eq!(limiter.clients(), 0);
        assert_eq!(
            metrics
                .requests_shed
                .with_label_values(&["concurrency_limit"])
                .get(),
            1
        );
    }

    #[test]
    fn keys_identify_api_keys_when_auth_is_on_else_peers() {
        let ip = Some("10.0.0.1".parse().unwrap());
        assert_eq!(
            ClientKey::new(false, Some("k1"), ip),
            ClientKey::new(false, Some("k2"), ip)
        );
        let k1 = ClientKey::new(true, Some("k1"), ip);
        assert_ne!(k1, ClientKey::new(true, Some("k2"), ip));
        assert!(!k1.as_str().contains("k1"), "the key itself is not kept");
        assert_eq!(ClientKey::new(true, None, None).as_str(), "unknown");
        let unlimited = ClientLimiter::new(0, Arc::new(Metrics::new(2, 8)));
        let permits: Vec<_> = (0..100)
            .map(|_| unlimited.acquire(&k1).expect("no limit"))
            .collect();
        assert_eq!(permits.len(), 100);
    }
}
