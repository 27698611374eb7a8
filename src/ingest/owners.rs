//! Which open stream owns each device, so two streams never feed one device's timeline at once.
//!
//! Policy (docs/protocol.md, "Device ownership"): the newest stream takes over. A stream claims a device
//! with a hello (or, on WebSocket, by connecting) or with its first chunk for it; if another stream owned
//! the device, that stream is told (its receiver from [`DeviceOwners::open`] yields the device id) and
//! must drop the device: it stops receiving its predictions, and its further chunks for it are refused as
//! `taken_over` until it says hello for the device again. Also enforces the per-stream and per-API-key caps
//! on distinct devices. Protocol-neutral: the adapters turn a loss into a `ChunkError` or a close frame.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::error::Error;

/// Caps on distinct devices owned at once; 0 = no cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnerLimits {
    /// Per stream or socket (a gateway multiplexing devices on one connection).
    pub max_devices_per_stream: usize,
    /// Per API key, over all its open streams (auth off: not applied).
    pub max_devices_per_key: usize,
}

#[derive(Debug)]
struct Owner {
    stream: u64,
    key: Option<usize>,
    lost: mpsc::UnboundedSender<String>,
}

#[derive(Debug)]
struct Inner {
    owners: DashMap<String, Owner>,
    per_key: DashMap<usize, usize>,
    next_stream: AtomicU64,
    limits: OwnerLimits,
}

impl Inner {
    fn count_key(&self, key: Option<usize>, delta: isize) {
        let Some(key) = key else { return };
        let mut count = self.per_key.entry(key).or_insert(0);
        *count = count.saturating_add_signed(delta);
    }
}

/// The registry of device owners; cloning is cheap.
#[derive(Clone, Debug)]
pub struct DeviceOwners {
    inner: Arc<Inner>,
}

/// How a claim went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This stream already owned the device.
    Kept,
    /// Nobody owned it.
    New,
    /// Another stream owned it and has been told.
    TookOver,
}

impl DeviceOwners {
    pub fn new(limits: OwnerLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                owners: DashMap::new(),
                per_key: DashMap::new(),
                next_stream: AtomicU64::new(0),
                limits,
            }),
        }
    }

    /// A new stream (of API key `key`, `None` when auth is off) and the receiver of the devices it loses.
    pub fn open(&self, key: Option<usize>) -> (StreamOwnership, mpsc::UnboundedReceiver<String>) {
        let (lost, lost_rx) = mpsc::unbounded_channel();
        let stream = StreamOwnership {
            id: self.inner.next_stream.fetch_add(1, Ordering::Relaxed),
            key,
            lost,
            inner: Arc::clone(&self.inner),
            state: Mutex::new(StreamState::default()),
        };
        (stream, lost_rx)
    }

    /// Devices owned by an open stream now.
    pub fn owned(&self) -> usize {
        self.inner.owners.len()
    }
}

#[derive(Debug, Default)]
struct StreamState {
    owned: HashSet<String>,
    /// Taken over by another stream; chunks are refused until a new hello.
    lost: HashSet<String>,
}

/// One stream's claims; releases them when dropped (the stream ended).
#[derive(Debug)]
pub struct StreamOwnership {
    id: u64,
    key: Option<usize>,
    lost: mpsc::UnboundedSender<String>,
    inner: Arc<Inner>,
    state: Mutex<StreamState>,
}

fn taken_over(device_id: &str) -> Error {
    Error::Conflict {
        reason: "taken_over",
        message: format!(
            "device {device_id:?} is streamed by a newer stream now; this stream no longer carries it \
             (send a hello for it to take it back)"
        ),
    }
}

impl StreamOwnership {
    fn lock(&self) -> MutexGuard<'_, StreamState> {
        // Every change is a single insert/remove: the sets stay consistent even after a panic.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_owner(&self, device_id: &str) -> bool {
        self.inner
            .owners
            .get(device_id)
            .is_some_and(|o| o.stream == self.id)
    }

    /// Claims `device_id` for this stream. `explicit` (a hello, a socket for the device) takes over even a
    /// device this stream lost before; a chunk (`explicit = false`) does not, and is refused as
    /// `taken_over` instead.
    pub fn claim(&self, device_id: &str, explicit: bool) -> Result<Claim, Error> {
        let mut state = self.lock();
        if state.owned.contains(device_id) {
            if self.is_owner(device_id) {
                return Ok(Claim::Kept);
            }
            // Lost; the notice is still on its way.
            state.owned.remove(device_id);
            state.lost.insert(device_id.to_string());
        }
        if !explicit && state.lost.contains(device_id) {
            return Err(taken_over(device_id));
        }
        let limits = self.inner.limits;
        if limits.max_devices_per_stream > 0 && state.owned.len() >= limits.max_devices_per_stream {
            return Err(Error::ResourceExhausted {
                reason: "max_devices_per_stream",
                message: format!(
                    "this stream carries its maximum of {} devices (--max-devices-per-stream)",
                    limits.max_devices_per_stream
                ),
            });
        }
        let claim = {
            let entry = self.inner.owners.entry(device_id.to_string());
            let previous_key = match &entry {
                dashmap::Entry::Occupied(o) => Some(o.get().key),
                dashmap::Entry::Vacant(_) => None,
            };
            if let Some(key) = self.key
                && limits.max_devices_per_key > 0
                && previous_key != Some(Some(key))
                && self
                    .inner
                    .per_key
                    .get(&key)
                    .is_some_and(|n| *n >= limits.max_devices_per_key)
            {
                return Err(Error::ResourceExhausted {
                    reason: "max_devices_per_key",
                    message: format!(
                        "this API key streams its maximum of {} devices (--max-devices-per-key)",
                        limits.max_devices_per_key
                    ),
                });
            }
            let me = Owner {
                stream: self.id,
                key: self.key,
                lost: self.lost.clone(),
            };
            match entry {
                dashmap::Entry::Occupied(mut o) => {
                    let previous = o.insert(me);
                    if previous.key != self.key {
                        self.inner.count_key(previous.key, -1);
                        self.inner.count_key(self.key, 1);
                    }
                    // A stream that is gone already has nothing to be told.
                    let _ = previous.lost.send(device_id.to_string());
                    Claim::TookOver
                }
                dashmap::Entry::Vacant(v) => {
                    v.insert(me);
                    self.inner.count_key(self.key, 1);
                    Claim::New
                }
            }
        };
        state.lost.remove(device_id);
        state.owned.insert(device_id.to_string());
        Ok(claim)
    }

    /// Gives a device back (e.g. its first chunk was refused).
    pub fn release(&self, device_id: &str) {
        if self.lock().owned.remove(device_id) {
            self.release_entry(device_id);
        }
    }

    fn release_entry(&self, device_id: &str) {
        if self
            .inner
            .owners
            .remove_if(device_id, |_, o| o.stream == self.id)
            .is_some()
        {
            self.inner.count_key(self.key, -1);
        }
    }

    /// Handles a notice from the receiver of [`DeviceOwners::open`]: true when the device is indeed lost
    /// (false when this stream claimed it back since), so the adapter tells its client and stops
    /// delivering the device's predictions.
    pub fn lost(&self, device_id: &str) -> bool {
        let mut state = self.lock();
        if self.is_owner(device_id) {
            return false;
        }
        state.owned.remove(device_id);
        state.lost.insert(device_id.to_string());
        true
    }

    /// Devices this stream owns now.
    pub fn owned(&self) -> usize {
        self.lock().owned.len()
    }
}

impl Drop for StreamOwnership {
    fn drop(&mut self) {
        let owned = std::mem::take(&mut self.lock().owned);
        for device in owned {
            self.release_entry(&device);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(per_stream: usize, per_key: usize) -> DeviceOwners {
        DeviceOwners::new(OwnerLimits {
            max_devices_per_stream: per_stream,
            max_devices_per_key: per_key,
        })
    }

    #[test]
    fn the_newest_stream_takes_over_and_the_old_one_is_told() {
        let registry = owners(0, 0);
        let (a, mut a_lost) = registry.open(None);
        let (b, _b_lost) = registry.open(None);
        assert_eq!(a.claim("d", false).unwrap(), Claim::New);
        assert_eq!(a.claim("d", false).unwrap(), Claim::Kept);
        assert_eq!(b.claim("d", false).unwrap(), Claim::TookOver);
        assert_eq!(a_lost.try_recv().unwrap(), "d");
        assert!(a.lost("d"));
        // The old stream's chunks are refused; its hello takes the device back.
        assert_eq!(a.claim("d", false).unwrap_err().reason(), "taken_over");
        assert_eq!(a.claim("d", true).unwrap(), Claim::TookOver);
        assert_eq!(b.claim("d", false).unwrap_err().reason(), "taken_over");
        // A stale notice (the device was claimed back meanwhile) is ignored.
        let (c, _c_lost) = registry.open(None);
        c.claim("e", false).unwrap();
        assert!(!c.lost("e"));
        drop(a);
        drop(c);
        assert_eq!(registry.owned(), 0, "claims are released with the stream");
    }

    #[test]
    fn per_stream_and_per_key_caps() {
        let registry = owners(2, 3);
        let (a, _) = registry.open(Some(7));
        a.claim("a1", true).unwrap();
        a.claim("a2", true).unwrap();
        assert_eq!(
            a.claim("a3", true).unwrap_err().reason(),
            "max_devices_per_stream"
        );
        let (b, _) = registry.open(Some(7));
        b.claim("b1", true).unwrap();
        assert_eq!(
            b.claim("b2", true).unwrap_err().reason(),
            "max_devices_per_key"
        );
        // Taking over a device of the same key does not count twice.
        assert_eq!(b.claim("a1", true).unwrap(), Claim::TookOver);
        // Another key is not affected; releasing frees the key's slot.
        let (other, _) = registry.open(Some(8));
        other.claim("o1", true).unwrap();
        b.release("b1");
        b.claim("b2", true).unwrap();
        let (anonymous, _) = registry.open(None);
        for i in 0..2 {
            anonymous.claim(&format!("n{i}"), true).unwrap();
        }
    }
}
