//! Window assembly throughput (samples/s): one device streaming every modality of the bundled model in
//! one-second chunks, windows closing on the hop grid as the data arrives. And the cost of one background
//! tick's close check over 10,000 devices that have nothing due (the tick runs on a blocking thread).
//!
//! cargo bench --bench window_assembly

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossl_serve::model::Manifest;
use crossl_serve::window::{DeviceWindows, WindowPolicy};

const SEC: i64 = 1_000_000_000;

fn stream(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/crossl-dsads");
    let manifest = Arc::new(Manifest::load(&dir).expect("bundled model"));
    let seconds = 60usize;
    // One second of every modality (deterministic values).
    let chunks: Vec<Vec<f32>> = manifest
        .modalities
        .iter()
        .map(|m| {
            let rows = m.sample_rate_hz.round() as usize;
            (0..rows * m.channels)
                .map(|i| (i as f32 * 0.37).sin())
                .collect()
        })
        .collect();
    let samples_per_second: usize = manifest
        .modalities
        .iter()
        .map(|m| m.sample_rate_hz.round() as usize)
        .sum();
    let mut group = c.benchmark_group("window_assembly");
    group.throughput(Throughput::Elements((samples_per_second * seconds) as u64));
    group.bench_function(
        format!("{}_modalities_{seconds}s", manifest.modalities.len()),
        |b| {
            b.iter(|| {
                let mut device =
                    DeviceWindows::new(Arc::clone(&manifest), WindowPolicy::default(), 0);
                let mut out = Vec::new();
                let t0 = 1_800_000_000 * SEC;
                for s in 0..seconds as i64 {
                    for (m, chunk) in chunks.iter().enumerate() {
                        black_box(device.push(m, t0 + s * SEC, chunk, 0));
                    }
                    device.close_ready(0, &mut out);
                }
                assert!(out.len() >= seconds - manifest.window_seconds as usize);
                black_box(out)
            })
        },
    );
    // As the ingest path runs it: 200 ms chunks, every modality in turn, the close check after every chunk.
    let small: Vec<Vec<f32>> = chunks
        .iter()
        .zip(&manifest.modalities)
        .map(|(c, m)| c[..c.len() / 5 / m.channels * m.channels].to_vec())
        .collect();
    group.bench_function(
        format!(
            "{}_modalities_{seconds}s_200ms_chunks_close_per_chunk",
            manifest.modalities.len()
        ),
        |b| {
            b.iter(|| {
                let mut device =
                    DeviceWindows::new(Arc::clone(&manifest), WindowPolicy::default(), 0);
                let mut out = Vec::new();
                let t0 = 1_800_000_000 * SEC;
                for step in 0..seconds as i64 * 5 {
                    for (m, chunk) in small.iter().enumerate() {
                        black_box(device.push(m, t0 + step * SEC / 5, chunk, 0));
                        device.close_ready(0, &mut out);
                    }
                }
                assert!(out.len() >= seconds - manifest.window_seconds as usize);
                black_box(out)
            })
        },
    );
    group.finish();
}

/// One tick's pass over 10,000 streaming devices (every modality, mid-window, nothing due).
fn tick(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/crossl-dsads");
    let manifest = Arc::new(Manifest::load(&dir).expect("bundled model"));
    let t0 = 1_800_000_000 * SEC;
    let mut devices: Vec<DeviceWindows> = (0..10_000)
        .map(|_| {
            let mut d = DeviceWindows::new(Arc::clone(&manifest), WindowPolicy::default(), 0);
            for (m, spec) in manifest.modalities.iter().enumerate() {
                let rows = (spec.sample_rate_hz * 3.5).round() as usize;
                d.push(m, t0, &vec![0.5; rows * spec.channels], 0);
            }
            d.close_ready(0, &mut Vec::new());
            d
        })
        .collect();
    let mut group = c.benchmark_group("tick");
    group.throughput(Throughput::Elements(devices.len() as u64));
    group.bench_function("close_check_10000_devices", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            for d in &mut devices {
                d.close_ready(SEC / 2, &mut out);
            }
            assert!(out.is_empty());
            black_box(out)
        })
    });
    group.finish();
}

criterion_group!(benches, stream, tick);
criterion_main!(benches);
