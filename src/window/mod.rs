//! Per-device, per-modality window assembly driven by the manifest: chunks go into timestamped buffers,
//! windows on the hop grid close on the device's own timeline (event time) — when every active modality's
//! data has reached their end, when the device's watermark has passed it, or when the device has stalled —
//! and are resampled onto each modality's exact grid.
//! Policy: docs/windowing.md.

mod assembler;
mod buffer;
pub mod clock;
pub mod phase;
#[cfg(test)]
mod tests;

pub use assembler::{CloseTrigger, ClosedWindow, DeviceWindows, PushOutcome, WindowPolicy};
pub use buffer::InsertStats;
pub use clock::{Clock, ManualClock, SystemClock};
pub use phase::{WindowPhase, device_phase, phase_quantum};
