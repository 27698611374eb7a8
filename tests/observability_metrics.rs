//! The Grafana dashboard (deploy/grafana/crossl-serve.json) and the alerts (deploy/prometheus/alerts.yaml)
//! only use metrics a running server exposes: every `crossl_…` / `process_…` name in their PromQL must be a
//! family in `/metrics` (a histogram's `_bucket`, `_sum` and `_count` series belong to its family).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{bundled_model, repo_path, start, test_args};

/// Metric names in one PromQL expression: identifiers starting with `crossl_` or `process_`. Label
/// names never start with those prefixes here, and string literals (label values) are skipped.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.char_indices().peekable();
    let mut in_string: Option<char> = None;
    while let Some((i, c)) = chars.next() {
        if let Some(q) = in_string {
            if c == '\\' {
                chars.next();
            } else if c == q {
                in_string = None;
            }
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            in_string = Some(c);
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                    end = j + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let word = &expr[i..end];
            if word.starts_with("crossl_") || word.starts_with("process_") {
                names.push(word.to_string());
            }
        }
    }
    names
}

/// Every `expr` of the dashboard JSON (panel targets, nested rows, template queries are not PromQL
/// panels but are checked too when they name metrics).
fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// Every `expr:` of a Prometheus rule file: inline, or a block scalar (`>-`, `|`) on the lines indented
/// below it.
fn alert_exprs(yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if !rest.starts_with(['>', '|']) {
            exprs.push(rest.trim_matches(['"', '\'']).to_string());
            continue;
        }
        let indent = line.len() - trimmed.len();
        let mut block = String::new();
        while let Some(next) = lines.peek() {
            let t = next.trim_start();
            if !t.is_empty() && next.len() - t.len() <= indent {
                break;
            }
            block.push_str(t);
            block.push(' ');
            lines.next();
        }
        exprs.push(block);
    }
    exprs
}

/// Families in a text exposition, by name, with their type.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            Some((name.to_string(), kind.trim().to_string()))
        })
        .collect()
}

/// Whether `name` is a family, or a `_bucket`/`_sum`/`_count` series of a histogram (or summary) family.
fn exposed(name: &str, families: &BTreeMap<String, String>) -> bool {
    if families.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            families.get(base).is_some_and(|kind| {
                kind == "histogram" || (kind == "summary" && *suffix != "_bucket")
            })
        })
    })
}

#[test]
fn promql_names_are_found_in_expressions() {
    assert_eq!(
        metric_names(
            r#"sum by (le) (rate(crossl_queue_wait_seconds_bucket{job=~"crossl_x", path="stream"}[5m])) / process_open_fds"#
        ),
        vec!["crossl_queue_wait_seconds_bucket", "process_open_fds"]
    );
    let yaml = "rules:\n  - alert: A\n    expr: crossl_ready == 0\n    for: 5m\n  - alert: B\n    expr: >-\n      rate(crossl_a_total[5m])\n      / crossl_b\n    labels: {}\n";
    assert_eq!(
        alert_exprs(yaml),
        vec!["crossl_ready == 0", "rate(crossl_a_total[5m]) / crossl_b "]
    );
    let fams = BTreeMap::from([
        ("crossl_h".to_string(), "histogram".to_string()),
        ("crossl_c_total".to_string(), "counter".to_string()),
    ]);
    assert!(exposed("crossl_h_bucket", &fams) && exposed("crossl_h_count", &fams));
    assert!(exposed("crossl_c_total", &fams));
    assert!(!exposed("crossl_c_total_bucket", &fams) && !exposed("crossl_missing", &fams));
}

#[tokio::test]
async fn every_metric_in_the_dashboard_and_alerts_exists_in_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path("deploy/grafana/crossl-serve.json")).expect("dashboard"),
    )
    .expect("dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    let dashboard_names: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    let alerts =
        std::fs::read_to_string(repo_path("deploy/prometheus/alerts.yaml")).expect("alerts");
    let alert_names: BTreeSet<String> = alert_exprs(&alerts)
        .iter()
        .flat_map(|e| metric_names(e))
        .collect();
    assert!(
        dashboard_names.len() >= 15,
        "the dashboard parser found too few metrics: {dashboard_names:?}"
    );
    assert!(
        alert_names.len() >= 6,
        "the alert parser found too few metrics: {alert_names:?}"
    );

    let server = start(test_args(bundled_model())).await;
    let text = server.metrics_text().await;
    let families = families(&text);
    let missing: Vec<String> = dashboard_names
        .iter()
        .map(|n| ("deploy/grafana/crossl-serve.json", n))
        .chain(
            alert_names
                .iter()
                .map(|n| ("deploy/prometheus/alerts.yaml", n)),
        )
        .filter(|(_, n)| !exposed(n, &families))
        .map(|(file, n)| format!("{n} (used in {file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics used but not exposed by a running server: {missing:#?}\nexposed families: {:?}",
        families.keys().collect::<Vec<_>>()
    );
    // The families this work added are among them and have the expected types.
    for (name, kind) in [
        ("crossl_queue_depth", "gauge"),
        ("crossl_predictions_by_class_total", "counter"),
        ("crossl_store_errors_total", "counter"),
        ("crossl_max_devices", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert_eq!(
            families.get(name).map(String::as_str),
            Some(kind),
            "{name} in /metrics"
        );
    }
    server.shutdown().await.expect("clean shutdown");
}
