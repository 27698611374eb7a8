//! Looking at the server from outside: its Prometheus `/metrics` (counter families summed over their
//! labels, as deltas per step) and its CPU time and resident memory from `/proc/<pid>`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counter families scraped per step.
pub const COUNTERS: [&str; 5] = [
    "crossl_windows_shed_total",
    "crossl_chunks_rejected_total",
    "crossl_window_samples_dropped_total",
    "crossl_feed_lagged_total",
    "crossl_predictions_total",
];

/// Refuses any address that is not this machine's loopback: the generator only ever talks to a local
/// server.
pub fn ensure_loopback(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let (host, port) = rest
        .rsplit_once(':')
        .with_context(|| format!("{url}: an explicit port is needed"))?;
    let port: u16 = port.parse().with_context(|| format!("{url}: bad port"))?;
    anyhow::ensure!(
        matches!(host, "127.0.0.1" | "localhost" | "[::1]"),
        "{url}: crossl-loadgen only sends to 127.0.0.1 / localhost / [::1]"
    );
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// Sums of the [`COUNTERS`] families in a Prometheus text exposition.
pub fn sum_counters(text: &str) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<String, f64> = COUNTERS.iter().map(|c| (c.to_string(), 0.0)).collect();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        if let Some(sum) = sums.get_mut(&line[..name_end])
            && let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
        {
            *sum += value;
        }
    }
    sums
}

/// GET of a `http://127.0.0.1:port/path` URL over HTTP/1.0 (no chunked encoding), body as text.
pub async fn http_get(url: &str) -> anyhow::Result<String> {
    let (host, port) = ensure_loopback(url)?;
    let path = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split_once('/')
        .map_or("/".to_string(), |(_, p)| format!("/{p}"));
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await?;
        let mut body = Vec::new();
        stream.read_to_end(&mut body).await?;
        anyhow::Ok(body)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .with_context(|| format!("GET {url} timed out"))?
        .with_context(|| format!("GET {url}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {url}: no HTTP response"))?;
    anyhow::ensure!(
        head.split(' ').nth(1) == Some("200"),
        "GET {url}: {}",
        head.lines().next().unwrap_or_default()
    );
    Ok(body.to_string())
}

/// CPU time and resident memory of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux for every architecture's ABI).
const USER_HZ: f64 = 100.0;

/// Reads `/proc/<pid>/stat` (utime + stime) and `/proc/<pid>/status` (VmRSS).
pub fn read_proc(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is --server-pid right?)"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_proc(&stat, &status).with_context(|| format!("parsing /proc/{pid}"))
}

pub fn parse_proc(stat: &str, status: &str) -> anyhow::Result<ProcSample> {
    // The command name (field 2) may hold spaces and parentheses: fields are counted after the last ')'.
    let after = stat.rsplit_once(')').context("no ')' in stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short stat")?.parse::<f64>()?)
    };
    let cpu_seconds = (ticks(11)? + ticks(12)?) / USER_HZ;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .split_whitespace()
        .next()
        .context("empty VmRSS")?
        .parse()?;
    Ok(ProcSample {
        cpu_seconds,
        rss_bytes: rss_kb * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        assert_eq!(
            ensure_loopback("http://127.0.0.1:9090/metrics").unwrap(),
            ("127.0.0.1".into(), 9090)
        );
        assert!(ensure_loopback("http://localhost:50051").is_ok());
        assert_eq!(ensure_loopback("ws://[::1]:8080").unwrap().0, "::1");
        assert!(ensure_loopback("http://10.0.0.1:8080").is_err());
        assert!(ensure_loopback("http://example.com:80").is_err());
        assert!(ensure_loopback("http://127.0.0.1").is_err());
    }

    #[test]
    fn sums_counter_families_over_labels() {
        let text = "# HELP crossl_chunks_rejected_total x\n\
            crossl_chunks_rejected_total{transport=\"grpc\",reason=\"late_data\"} 3\n\
            crossl_chunks_rejected_total{transport=\"websocket\",reason=\"bad_json\"} 2\n\
            crossl_chunks_rejected_total_other 100\n\
            crossl_windows_shed_total 7\n";
        let sums = sum_counters(text);
        assert_eq!(sums["crossl_chunks_rejected_total"], 5.0);
        assert_eq!(sums["crossl_windows_shed_total"], 7.0);
        assert_eq!(sums["crossl_window_samples_dropped_total"], 0.0);
    }

    #[test]
    fn parses_proc_stat_and_status() {
        let stat = "1234 (crossl (serve)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 \
                    100 1000000 2000 18446744073709551615";
        let status = "Name:\tcrossl-serve\nVmRSS:\t  65536 kB\nThreads:\t9\n";
        let sample = parse_proc(stat, status).unwrap();
        assert_eq!(sample.cpu_seconds, 3.0);
        assert_eq!(sample.rss_bytes, 64 * 1024 * 1024);
        let own = read_proc(std::process::id()).unwrap();
        assert!(own.rss_bytes > 0);
    }
}
