//! Per-device, per-modality window assembly driven by the manifest.
