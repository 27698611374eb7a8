//! What `/v1/devices` shows about a device.

use serde::Serialize;

use crate::model::Manifest;
use crate::window::DeviceWindows;

/// One modality of one device.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ModalityStatus {
    pub name: String,
    /// Server time of the last chunk (or declaration), unix nanoseconds.
    pub last_heard_unix_nanos: i64,
    /// Not heard from within the staleness limit (no longer holds windows open).
    pub stale: bool,
}

/// A tracked device.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DeviceInfo {
    pub device_id: String,
    /// Server time of the last chunk or hello, unix nanoseconds.
    pub last_seen_unix_nanos: i64,
    /// End of the last window closed for this device.
    pub last_window_end_unix_nanos: Option<i64>,
    /// Modalities heard from (or declared), in manifest order.
    pub modalities: Vec<ModalityStatus>,
}

pub(super) fn describe(
    id: &str,
    manifest: &Manifest,
    w: &DeviceWindows,
    now: i64,
    stale_nanos: i64,
) -> DeviceInfo {
    DeviceInfo {
        device_id: id.to_string(),
        last_seen_unix_nanos: w.last_seen(),
        last_window_end_unix_nanos: w.last_closed_end(),
        modalities: manifest
            .modalities
            .iter()
            .zip(w.last_heard())
            .filter_map(|(spec, heard)| {
                heard.map(|h| ModalityStatus {
                    name: spec.name.clone(),
                    last_heard_unix_nanos: h,
                    stale: now - h > stale_nanos,
                })
            })
            .collect(),
    }
}
