//! Peak RSS of decoding one ~4 MiB OIP infer body, the way the server did before (`serde_json::Value`
//! data, then flattened) and does now (straight into `f32`). Run one mode per process:
//! `cargo run --release --example oip_body_rss -- value|flat [NUMBER]` (NUMBER: how each value is written,
//! default `-0.012345`; `0` is the worst case, most values per byte); prints VmHWM from /proc/self/status.

use crossl_serve::api::kserve::InferRequest;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct ValueInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: serde_json::Value,
}

#[derive(serde::Deserialize)]
struct ValueRequest {
    inputs: Vec<ValueInput>,
}

fn flatten(value: &serde_json::Value, out: &mut Vec<f32>) {
    match value {
        serde_json::Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        serde_json::Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN) as f32),
        _ => {}
    }
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "flat".into());
    // 4 MiB of values, as one [rows, 3, 125] tensor (the default --max-body-bytes).
    let value = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "-0.012345".into());
    let value = value.as_str();
    let rows = (4 << 20) / (3 * 125 * (value.len() + 1));
    let mut body = format!(
        r#"{{"inputs": [{{"name": "x_torso_acc", "datatype": "FP32", "shape": [{rows}, 3, 125], "data": ["#
    );
    for i in 0..rows * 3 * 125 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(value);
    }
    body.push_str("]}]}");
    body.shrink_to_fit();
    let before = vm_hwm_kib();
    let values = match mode.as_str() {
        "value" => {
            let r: ValueRequest = serde_json::from_str(&body).expect("decodes");
            let mut out = Vec::new();
            flatten(&r.inputs[0].data, &mut out);
            out.len()
        }
        _ => {
            let r: InferRequest = serde_json::from_str(&body).expect("decodes");
            r.inputs[0].data.values.len()
        }
    };
    let after = vm_hwm_kib();
    println!(
        "mode={mode} number={value} body_bytes={} values={values} VmHWM_before_decode_kib={before} VmHWM_after_decode_kib={after} decode_peak_growth_kib={}",
        body.len(),
        after - before
    );
}
