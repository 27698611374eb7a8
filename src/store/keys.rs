//! Redis key layout of the shared store, designed for Redis Cluster: every key of one device carries the
//! device id as its hash tag (`{…}`), so a device's keys live in one hash slot and one node. Device ids
//! are letters, digits and `. _ : -` (see `ingest::validate::device_id`), never braces, so the tag is
//! exactly the id.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `crossl:{<device>}:latest` | hash `end`, `prediction` | newest prediction (JSON) and its window end |
//! | `crossl:{<device>}:history` | sorted set, score = window end | the last `--history-len` predictions |
//! | `crossl:{<device>}:device` | string (JSON) | registry entry: `DeviceInfo`, holder, heartbeat |
//! | `crossl:devices` | sorted set, score = heartbeat (unix ms) | index of the registry, for listing |
//! | `crossl:{<device>}:labels` | hash `version`, `labels` | labelled spans and windows of the personal head (JSON) |
//! | channel `crossl:feed` | pub/sub | every prediction of every replica, with its replica id |
//! | channel `crossl:labels` | pub/sub | a device's new labels (or their deletion), for the replica holding it |
//!
//! Every per-device key but `labels` expires `--prediction-retention-s` after its last write; the index
//! drops members older than that on each heartbeat. `labels` stays until `DELETE /v1/devices/{id}/labels`
//! (bounded per device by `--label-max-spans` / `--label-max-windows`).

/// Prefix of every key.
pub const PREFIX: &str = "crossl";

/// The pub/sub channel of the live feed.
pub const FEED_CHANNEL: &str = "crossl:feed";

/// The pub/sub channel of label updates.
pub const LABELS_CHANNEL: &str = "crossl:labels";

/// The registry index (sorted set of device ids by last heartbeat, unix ms).
pub const DEVICE_INDEX: &str = "crossl:devices";

pub fn latest(device_id: &str) -> String {
    format!("{PREFIX}:{{{device_id}}}:latest")
}

pub fn history(device_id: &str) -> String {
    format!("{PREFIX}:{{{device_id}}}:history")
}

pub fn device(device_id: &str) -> String {
    format!("{PREFIX}:{{{device_id}}}:device")
}

pub fn labels(device_id: &str) -> String {
    format!("{PREFIX}:{{{device_id}}}:labels")
}

/// The hash tag Redis Cluster hashes for `key` (the whole key when it has none).
#[cfg(test)]
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_device_keys_share_a_hash_tag_whatever_the_id() {
        for id in ["wrist-7", "ward-3:bed.2_a", "x"] {
            let tags =
                [latest(id), history(id), device(id), labels(id)].map(|k| hash_tag(&k).to_string());
            assert!(
                tags.iter().all(|t| *t == tags[0]),
                "{id:?}: {tags:?} must be equal"
            );
            assert_eq!(tags[0], id);
        }
        assert_eq!(latest("wrist-7"), "crossl:{wrist-7}:latest");
        assert_eq!(hash_tag(&history("wrist-7")), "wrist-7");
    }
}
