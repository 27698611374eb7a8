//! Heap bytes the server holds per connected device, counted exactly by a counting global allocator (no
//! RSS noise, no timing): the window state of a device streaming every modality of the bundled model in
//! 200 ms chunks, and the store's history of one device at its cap. Prints a table; used for the
//! before/after of memory optimisations in docs/benchmarks.md.
//!
//! cargo bench --bench device_memory            (DEVICES=1000 HISTORY_LEN=256 by default)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use crossl_serve::model::Manifest;
use crossl_serve::store::{Prediction, PredictionStore, Timings};
use crossl_serve::window::{DeviceWindows, WindowPolicy};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const SEC: i64 = 1_000_000_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run small then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let devices = if quick {
        10
    } else {
        env_usize("DEVICES", 1000)
    };
    let history_len = env_usize("HISTORY_LEN", 256);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/crossl-dsads");
    let manifest = Arc::new(Manifest::load(&dir).expect("bundled model"));

    // Window state: 30 s of 200 ms chunks, every modality, close check after each round (as ingest does).
    let chunks: Vec<Vec<f32>> = manifest
        .modalities
        .iter()
        .map(|m| {
            let rows = (m.sample_rate_hz / 5.0).round() as usize;
            (0..rows * m.channels)
                .map(|i| (i as f32 * 0.37).sin())
                .collect()
        })
        .collect();
    let before = live();
    let mut fleet: Vec<DeviceWindows> = (0..devices)
        .map(|i| {
            let policy = WindowPolicy::default().for_device(&format!("dev-{i}"));
            DeviceWindows::new(Arc::clone(&manifest), policy, 0)
        })
        .collect();
    let mut out = Vec::new();
    let t0 = 1_800_000_000 * SEC;
    for step in 0..150i64 {
        let start = t0 + step * SEC / 5;
        for device in fleet.iter_mut() {
            for (m, chunk) in chunks.iter().enumerate() {
                device.push(m, start, chunk, 0);
            }
            device.close_ready(0, &mut out);
            out.clear();
        }
    }
    let window_bytes = (live() - before) as f64 / devices as f64;
    let held = fleet.iter().map(|d| d.buffered_samples()).sum::<usize>() as f64 / devices as f64;

    // Store: every device's history at its cap, with predictions shaped like the bundled model's.
    let classes = manifest.classes.clone();
    // As the batcher hands them out: one shared list per present set.
    let present: Arc<[String]> = manifest.modalities.iter().map(|m| m.name.clone()).collect();
    let before = live();
    let store = PredictionStore::new(history_len, 16);
    for k in 0..history_len as i64 {
        for i in 0..devices {
            store.insert(Prediction {
                device_id: format!("dev-{i}"),
                window_end_unix_nanos: t0 + k * SEC,
                label: classes[k as usize % classes.len()].clone(),
                class_index: k as usize % classes.len(),
                probabilities: vec![1.0 / classes.len() as f32; classes.len()],
                embedding: vec![0.5; manifest.embedding_size],
                present_modalities: Arc::clone(&present),
                timings: Timings::default(),
                personalized: false,
                general: None,
            });
        }
    }
    let store_bytes = (live() - before) as f64 / devices as f64;
    let total = window_bytes + store_bytes;
    println!("device_memory: {devices} devices, history_len {history_len}, bundled model");
    println!("| part | bytes per device | KiB per device |");
    println!("|---|---|---|");
    for (name, bytes) in [
        (
            "window state (15 modalities, 30 s of 200 ms chunks)",
            window_bytes,
        ),
        ("prediction history at its cap", store_bytes),
        ("total", total),
    ] {
        println!("| {name} | {bytes:.0} | {:.1} |", bytes / 1024.0);
    }
    println!(
        "per prediction in history: {:.0} bytes; samples held per device: {held:.0} ({:.1} bytes each)",
        store_bytes / history_len as f64,
        window_bytes / held
    );
    std::hint::black_box((fleet, store));
}
