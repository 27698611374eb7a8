//! Window assembly throughput (samples/s): one device streaming every modality of the bundled model in
//! one-second chunks, windows closing on the hop grid as the data arrives.
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
    group.finish();
}

criterion_group!(benches, stream);
criterion_main!(benches);
