//! `crossl-serve check-model` accepts the bundled and fixture models and names what is wrong otherwise.

mod common;

use common::*;
use crossl_serve::check::{CheckArgs, run};

fn args(model: std::path::PathBuf) -> CheckArgs {
    CheckArgs {
        model,
        ort_dylib_path: std::env::var_os("ORT_DYLIB_PATH").map(Into::into),
    }
}

#[test]
fn bundled_and_fixture_models_pass() {
    for model in [bundled_model(), fixture_model()] {
        let summary =
            run(&args(model.clone())).unwrap_or_else(|e| panic!("{}: {e:#}", model.display()));
        assert!(summary.contains("golden cases within"), "{summary}");
    }
}

#[test]
fn a_tampered_model_is_refused_with_file_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = fixture_model();
    for f in ["model.json", "model.onnx", "golden.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).expect("copy");
    }
    let mut manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("model.json")).expect("read"),
    )
    .expect("json");
    manifest["model_sha256"] = serde_json::json!("0".repeat(64));
    std::fs::write(dir.path().join("model.json"), manifest.to_string()).expect("write");
    let err = format!(
        "{:#}",
        run(&args(dir.path().to_path_buf())).expect_err("sha mismatch")
    );
    assert!(
        err.contains("model_sha256") && err.contains("model.onnx"),
        "{err}"
    );

    manifest["modalities"][1]["window_samples"] = serde_json::json!(70);
    std::fs::write(dir.path().join("model.json"), manifest.to_string()).expect("write");
    let err = format!(
        "{:#}",
        run(&args(dir.path().to_path_buf())).expect_err("bad manifest")
    );
    assert!(
        err.contains("model.json") && err.contains("modalities[1].window_samples"),
        "{err}"
    );
}
