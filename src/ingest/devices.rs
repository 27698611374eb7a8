//! What `/v1/devices` shows about a device (the registry view; `store::StateStore` adds the replica that
//! holds it and whether that is still so).

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
    /// End of the last window closed for this device (device clock).
    pub last_window_end_unix_nanos: Option<i64>,
    /// Newest sample time the device has sent on its current timeline (device clock).
    pub newest_sample_unix_nanos: Option<i64>,
    /// The device's watermark: newest sample time less the allowed out-of-orderness; windows ending at or
    /// before it are closed (device clock).
    pub watermark_unix_nanos: Option<i64>,
    /// Where this device's windows end on the hop grid: `k · hop + window_phase_nanos` (device clock;
    /// 0 with `--window-phase aligned`).
    pub window_phase_nanos: i64,
    /// Estimated clock offset, device time − arrival time on the server clock, in seconds (the largest
    /// recent value, since delays only make it smaller). Negative: the device's clock lags the server's or
    /// its data arrives late (buffered); positive: its clock runs ahead.
    pub clock_offset_seconds: Option<f64>,
    /// Modalities heard from (or declared), in manifest order.
    pub modalities: Vec<ModalityStatus>,
    /// The replica (`--replica-id`) whose ingest holds this device's stream now; `null` when no live
    /// replica does (its replica stopped, or stopped refreshing the shared registry: see `stale`).
    pub held_by: Option<String>,
    /// True when no replica holds the device any more: the last registry entry a replica wrote for it is
    /// older than 3 heartbeats (`--store-heartbeat-ms`) or was released when that replica shut down. The
    /// fields above are then the last ones known. Always false for devices held by the answering replica.
    pub stale: bool,
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
        newest_sample_unix_nanos: w.newest_sample(),
        window_phase_nanos: w.phase_nanos(),
        watermark_unix_nanos: w.watermark(),
        clock_offset_seconds: w.clock_offset().map(|o| o as f64 / 1e9),
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
        held_by: None,
        stale: false,
    }
}
