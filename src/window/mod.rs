//! Per-device, per-modality window assembly driven by the manifest: chunks go into timestamped buffers,
//! windows on the hop grid close when every active modality has reached their end (or when the lateness
//! tolerance has passed on the server clock), and are resampled onto each modality's exact grid.
//! Policy: docs/windowing.md.

mod assembler;
mod buffer;
pub mod clock;
#[cfg(test)]
mod tests;

pub use assembler::{ClosedWindow, DeviceWindows, PushOutcome, WindowPolicy};
pub use buffer::InsertStats;
pub use clock::{Clock, ManualClock, SystemClock};
