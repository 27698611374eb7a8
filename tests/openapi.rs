//! The committed `openapi.json` is what the code generates. Regenerate with
//! `UPDATE_OPENAPI=1 cargo test --test openapi`.

#[test]
fn committed_openapi_json_is_up_to_date() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated = crossl_serve::api::rest::openapi_pretty() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi.json is out of date with the code (or missing). Regenerate it with\n    \
         UPDATE_OPENAPI=1 cargo test --test openapi\nand commit the result."
    );
}
