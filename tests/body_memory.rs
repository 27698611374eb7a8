//! The JSON bodies of the one-shot routes decode straight into `f32` buffers: a counting allocator shows
//! what decoding a 4 MiB OIP body allocates at its peak (a `serde_json::Value` tree would need ~16× the
//! body; the flat decoder needs about the values' 4 bytes each).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use crossl_serve::api::kserve::InferRequest;
use crossl_serve::api::rest::PredictRequest;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The counters are process-wide: tests measure one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Bytes allocated at the peak of `f`, above what was allocated before it.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst) - base)
}

/// An OIP body of about `bytes` bytes: one `[rows, 3, 125]` tensor of numbers written like `value`.
fn oip_body(bytes: usize, value: &str) -> Vec<u8> {
    let per_row = 3 * 125 * (value.len() + 1);
    let rows = bytes / per_row;
    let mut text = format!(
        r#"{{"inputs": [{{"name": "x_torso_acc", "datatype": "FP32", "shape": [{rows}, 3, 125], "data": ["#
    );
    for i in 0..rows * 3 * 125 {
        if i > 0 {
            text.push(',');
        }
        text.push_str(value);
    }
    text.push_str("]}]}");
    text.into_bytes()
}

#[test]
fn a_4_mib_oip_body_decodes_within_a_small_multiple_of_its_size() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Typical sensor values, and the worst case for a flat buffer: the shortest number JSON allows.
    for (value, bound) in [("-0.012345", 1.5), ("0", 4.0)] {
        let body = oip_body(4 << 20, value);
        let (request, peak) =
            peak_during(|| serde_json::from_slice::<InferRequest>(&body).expect("decodes"));
        let values = request.inputs[0].data.values.len();
        assert!(values > 400_000, "{values} values");
        let ratio = peak as f64 / body.len() as f64;
        println!(
            "{value:>10}: body {} B, {values} values, peak decode allocation {peak} B ({ratio:.2}× the body)",
            body.len()
        );
        assert!(
            ratio <= bound,
            "decoding allocated {ratio:.2}× the body at its peak (bound {bound}×)"
        );
    }
}

#[test]
fn a_large_predict_body_decodes_into_flat_rows() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let row = "[0.5,-1.25,9.75]";
    let rows = 100_000;
    let mut text = String::from(r#"{"modalities": {"torso_acc": ["#);
    for i in 0..rows {
        if i > 0 {
            text.push(',');
        }
        text.push_str(row);
    }
    text.push_str("]}}");
    let (request, peak) =
        peak_during(|| serde_json::from_str::<PredictRequest>(&text).expect("decodes"));
    let rows_seen = &request.modalities["torso_acc"];
    assert_eq!((rows_seen.rows, rows_seen.width), (rows, 3));
    assert_eq!(rows_seen.values.len(), 3 * rows);
    // One flat buffer (at most grown 2× plus the old one while it moves): no vector per sample.
    assert!(
        (peak as f64) < 2.0 * text.len() as f64,
        "peak {peak} B for a {} B body",
        text.len()
    );
}
