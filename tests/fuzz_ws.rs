//! Fuzzing the WebSocket binary frame decoder and device sockets (issue 16, point 8). The decoder
//! (`api::ws::decode_binary_frame`) gets arbitrary bytes and structured frames with wrong magic/version,
//! out-of-range modality indices, sample counts up to u32::MAX, any start time, NaN/±Inf and lengths off by
//! a few bytes; what it accepts must be exactly what docs/protocol.md's layout says. A smaller number of
//! cases go over real sockets: fuzzed binary, JSON and text frames (and hostile device ids in the URL) get
//! an error frame with a message and the socket stays open, or a documented close; afterwards a
//! well-behaved device still gets predictions. `PROPTEST_CASES=N` fuzzes longer.

mod fuzz_common;
mod streaming;

use std::time::Duration;

use crossl_serve::api::ws::{
    BINARY_HEADER_BYTES, BINARY_MAGIC, BINARY_VERSION, decode_binary_frame,
};
use futures::{SinkExt, StreamExt};
use fuzz_common::*;
use proptest::prelude::*;
use streaming::{WsMessage, WsStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A binary chunk frame before encoding; `count` is the header's sample count (by default the real one)
/// and `resize` bytes are appended (> 0) or cut (< 0) after encoding.
#[derive(Clone, Debug)]
struct FrameSpec {
    magic: u8,
    version: u8,
    index: u16,
    count: Option<u32>,
    start: i64,
    values: Vec<f32>,
    resize: i8,
}

impl FrameSpec {
    fn channels(&self) -> usize {
        manifest()
            .modalities
            .get(self.index as usize)
            .map_or(3, |m| m.channels)
    }

    fn encode(&self) -> Vec<u8> {
        let rows = (self.values.len() / self.channels()) as u32;
        let mut f = vec![self.magic, self.version];
        f.extend_from_slice(&self.index.to_le_bytes());
        f.extend_from_slice(&self.count.unwrap_or(rows).to_le_bytes());
        f.extend_from_slice(&self.start.to_le_bytes());
        for v in &self.values {
            f.extend_from_slice(&v.to_le_bytes());
        }
        match self.resize {
            n if n > 0 => f.extend(std::iter::repeat_n(0xAB, n as usize)),
            n => f.truncate(f.len().saturating_sub(n.unsigned_abs() as usize)),
        }
        f
    }
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    let n = manifest().modalities.len() as u16;
    (
        prop_oneof![9 => Just(BINARY_MAGIC), 1 => any::<u8>()],
        prop_oneof![9 => Just(BINARY_VERSION), 1 => any::<u8>()],
        prop_oneof![8 => 0..n, 1 => n..n + 4, 1 => any::<u16>()],
        prop_oneof![8 => Just(None), 1 => any::<u32>().prop_map(Some), 1 => Just(Some(u32::MAX))],
        prop_oneof![
            4 => 1_700_000_000i64 * SECOND..1_900_000_000 * SECOND,
            1 => Just(0i64),
            1 => Just(i64::MIN),
            1 => Just(i64::MAX),
            1 => any::<i64>(),
        ],
        (0usize..40).prop_flat_map(|rows| proptest::collection::vec(value(), rows * 3)),
        prop_oneof![8 => Just(0i8), 1 => -5i8..6],
    )
        .prop_map(
            |(magic, version, index, count, start, values, resize)| FrameSpec {
                magic,
                version,
                index,
                count,
                start,
                values,
                resize,
            },
        )
}

/// What docs/protocol.md says about a frame: the chunk it carries, or `None` when it is malformed.
fn expected_samples(frame: &[u8]) -> Option<(usize, i64, Vec<u32>)> {
    if frame.len() < BINARY_HEADER_BYTES || frame[0] != 0xC5 || frame[1] != 1 {
        return None;
    }
    let index = u16::from_le_bytes([frame[2], frame[3]]) as usize;
    let count = u32::from_le_bytes(frame[4..8].try_into().unwrap()) as u128;
    let start = i64::from_le_bytes(frame[8..16].try_into().unwrap());
    let channels = manifest().modalities.get(index)?.channels as u128;
    if 16 + count * channels * 4 != frame.len() as u128 {
        return None;
    }
    let bits = frame[16..]
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Some((index, start, bits))
}

fn check_decoder(frame: &[u8]) -> Result<(), TestCaseError> {
    let m = manifest();
    match (
        decode_binary_frame(frame, "fz-ws", m),
        expected_samples(frame),
    ) {
        (Ok(chunk), Some((index, start, bits))) => {
            prop_assert_eq!(&chunk.modality, &m.modalities[index].name);
            prop_assert_eq!(chunk.start_unix_nanos, start);
            prop_assert_eq!(&chunk.device_id, "fz-ws");
            let got: Vec<u32> = chunk.samples.iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(got, bits, "samples must be the frame's bytes, bit for bit");
        }
        (Err(e), None) => {
            prop_assert_eq!(e.kind(), "invalid_input", "{}", e);
            check_refusal(e)?;
        }
        (Ok(chunk), None) => {
            return Err(TestCaseError::fail(format!(
                "accepted a malformed frame of {} bytes as {} samples of {}",
                frame.len(),
                chunk.samples.len(),
                chunk.modality
            )));
        }
        (Err(e), Some(_)) => {
            return Err(TestCaseError::fail(format!(
                "refused a well-formed frame of {} bytes: {e}",
                frame.len()
            )));
        }
    }
    Ok(())
}

#[test]
fn the_binary_frame_decoder_never_panics_on_arbitrary_bytes_and_refuses_them_clearly() {
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..600),
        // A right header start makes the decoder read the rest.
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|mut b| {
            b.splice(0..0, [BINARY_MAGIC, BINARY_VERSION]);
            b
        }),
    ];
    run("arbitrary bytes → binary decoder", 512, bytes, |frame| {
        check_decoder(&frame)
    });
}

#[test]
fn the_binary_frame_decoder_accepts_exactly_the_documented_layout() {
    run(
        "structured frames → binary decoder",
        512,
        frame_spec(),
        |spec| check_decoder(&spec.encode()),
    );
}

/// One frame a fuzzed client sends on a device socket.
#[derive(Clone, Debug)]
enum ClientFrame {
    Binary(FrameSpec),
    BinaryRaw(Vec<u8>),
    Text(String),
    Json(serde_json::Value),
    /// A JSON chunk with hostile parts (modality, timestamp, rows).
    Chunk {
        sequence: u64,
        modality: String,
        start: Stamp,
        rows: serde_json::Value,
    },
    Hello(Vec<String>),
    /// Larger than `--ws-max-frame-bytes`: the server closes with 1009.
    Oversized,
}

const MAX_FRAME: usize = 64 * 1024;

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    let chunk = (
        any::<u64>(),
        modality_name(),
        stamp(),
        (0usize..30, 1usize..5).prop_flat_map(|(r, c)| json_rows(r, c)),
    )
        .prop_map(|(sequence, modality, start, rows)| ClientFrame::Chunk {
            sequence,
            modality,
            start,
            rows,
        });
    prop_oneof![
        4 => frame_spec().prop_map(ClientFrame::Binary),
        1 => proptest::collection::vec(any::<u8>(), 0..100).prop_map(ClientFrame::BinaryRaw),
        1 => ".{0,40}".prop_map(ClientFrame::Text),
        2 => json_value().prop_map(ClientFrame::Json),
        4 => chunk,
        1 => proptest::collection::vec(modality_name(), 0..4).prop_map(ClientFrame::Hello),
        // Rare: it ends the case's socket.
        1 => Just(ClientFrame::Oversized),
    ]
}

impl ClientFrame {
    fn message(&self, now: i64) -> WsMessage {
        match self {
            ClientFrame::Binary(spec) => {
                // Timestamps near "now" are accepted by the core; the spec's own start tests the decoder.
                let mut spec = spec.clone();
                if (1_700_000_000 * SECOND..1_900_000_000 * SECOND).contains(&spec.start) {
                    spec.start = now / SECOND * SECOND + spec.start % (5 * SECOND);
                }
                WsMessage::Binary(spec.encode().into())
            }
            ClientFrame::BinaryRaw(b) => WsMessage::Binary(b.clone().into()),
            ClientFrame::Text(t) => WsMessage::Text(t.clone().into()),
            ClientFrame::Json(v) => WsMessage::Text(v.to_string().into()),
            ClientFrame::Chunk {
                sequence,
                modality,
                start,
                rows,
            } => WsMessage::Text(
                serde_json::json!({
                    "sequence": sequence,
                    "modality": modality,
                    "start_unix_nanos": start.resolve(now),
                    "samples": rows,
                })
                .to_string()
                .into(),
            ),
            ClientFrame::Hello(modalities) => WsMessage::Text(
                serde_json::json!({"type": "hello", "modalities": modalities})
                    .to_string()
                    .into(),
            ),
            ClientFrame::Oversized => WsMessage::Binary(vec![BINARY_MAGIC; MAX_FRAME + 1].into()),
        }
    }
}

/// A text frame whose error reply (identified by its sequence) marks the end of a case's replies: the
/// socket answers frames in order.
const SENTINEL_SEQUENCE: u64 = u64::MAX - 12_345;

fn sentinel() -> WsMessage {
    WsMessage::Text(
        serde_json::json!({"type": "fuzz-sentinel", "sequence": SENTINEL_SEQUENCE})
            .to_string()
            .into(),
    )
}

fn check_error_frame(frame: &serde_json::Value) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(
            frame["kind"].as_str(),
            Some("invalid_input" | "resource_exhausted" | "payload_too_large")
        ),
        "error frame kind: {frame}"
    );
    prop_assert!(
        frame["error"]
            .as_str()
            .is_some_and(|e| !e.trim().is_empty()),
        "error frame without message: {frame}"
    );
    prop_assert!(
        frame["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "error frame without reason: {frame}"
    );
    Ok(())
}

/// Next message within 30 s (`None` when the socket ended).
async fn next(ws: &mut WsStream) -> Result<Option<WsMessage>, TestCaseError> {
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Err(_) => Err(TestCaseError::fail("no frame within 30 s")),
        Ok(None) => Ok(None),
        Ok(Some(Ok(m))) => Ok(Some(m)),
        // A reset after the server's close frame.
        Ok(Some(Err(_))) => Ok(None),
    }
}

/// Sends the frames and the sentinel on a fresh device socket; reads every reply up to the sentinel's.
async fn fuzz_socket(
    server: &streaming::TestServer,
    device: &str,
    frames: &[ClientFrame],
) -> Result<(), TestCaseError> {
    let mut ws = streaming::ws_connect(&server.ws_url(&format!("/v1/ws/devices/{device}")), None)
        .await
        .map_err(|e| TestCaseError::fail(format!("upgrade: {e}")))?;
    let welcome = next(&mut ws).await?;
    prop_assert!(
        matches!(&welcome, Some(WsMessage::Text(t)) if t.contains("\"welcome\"")),
        "{welcome:?}"
    );
    let now = streaming::next_second(Duration::ZERO) - SECOND;
    let oversized = frames
        .iter()
        .position(|f| matches!(f, ClientFrame::Oversized));
    // Frames after an oversized one may meet a closed socket.
    let sent = &frames[..oversized.map_or(frames.len(), |i| i + 1)];
    for frame in sent {
        if ws.send(frame.message(now)).await.is_err() {
            prop_assert!(oversized.is_some(), "the socket closed while sending");
            break;
        }
    }
    if oversized.is_none() {
        ws.send(sentinel())
            .await
            .map_err(|e| TestCaseError::fail(format!("send sentinel: {e}")))?;
    }
    let mut errors = 0;
    loop {
        let Some(message) = next(&mut ws).await? else {
            prop_assert!(
                oversized.is_some(),
                "the socket ended without a close frame"
            );
            return Ok(());
        };
        match message {
            WsMessage::Text(t) => {
                let frame: serde_json::Value = serde_json::from_str(t.as_str())
                    .map_err(|e| TestCaseError::fail(format!("non-JSON text frame {t}: {e}")))?;
                match frame["type"].as_str() {
                    Some("error") if frame["sequence"].as_u64() == Some(SENTINEL_SEQUENCE) => {
                        break;
                    }
                    Some("error") => {
                        errors += 1;
                        check_error_frame(&frame)?;
                    }
                    Some("prediction" | "skipped") => {}
                    other => return Err(TestCaseError::fail(format!("frame type {other:?}"))),
                }
            }
            WsMessage::Close(close) => {
                let code = close.as_ref().map(|c| c.code);
                prop_assert!(
                    oversized.is_some() && code == Some(CloseCode::Size),
                    "closed with {close:?}"
                );
                prop_assert!(close.is_some_and(|c| !c.reason.is_empty()));
                return Ok(());
            }
            _ => {}
        }
    }
    prop_assert!(
        errors <= sent.len(),
        "{errors} errors for {} frames",
        sent.len()
    );
    let _ = ws.close(None).await;
    Ok(())
}

/// Percent-encodes everything but unreserved characters (a device id as a URL path segment).
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A socket opened with any device id is either refused before the upgrade with a 4xx, welcomed, or told
/// why in an error frame and closed with 1008.
async fn hostile_id(server: &streaming::TestServer, id: &str) -> Result<(), TestCaseError> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let url = server.ws_url(&format!("/v1/ws/devices/{}", path_segment(id)));
    let mut ws = match streaming::ws_connect(&url, None).await {
        Ok(ws) => ws,
        Err(WsError::Http(response)) => {
            prop_assert!(response.status().is_client_error(), "{id:?}: {response:?}");
            return Ok(());
        }
        Err(e) => return Err(TestCaseError::fail(format!("{id:?}: {e}"))),
    };
    let first = next(&mut ws).await?;
    let Some(WsMessage::Text(t)) = first else {
        return Err(TestCaseError::fail(format!(
            "{id:?}: first frame {first:?}"
        )));
    };
    let frame: serde_json::Value = serde_json::from_str(t.as_str()).expect("JSON");
    match frame["type"].as_str() {
        Some("welcome") => {}
        Some("error") => {
            check_error_frame(&frame)?;
            let close = next(&mut ws).await?;
            prop_assert!(
                matches!(&close, Some(WsMessage::Close(Some(c))) if c.code == CloseCode::Policy),
                "{id:?}: {close:?}"
            );
        }
        other => return Err(TestCaseError::fail(format!("{id:?}: frame type {other:?}"))),
    }
    let _ = ws.close(None).await;
    Ok(())
}

#[test]
fn device_sockets_answer_fuzzed_frames_with_error_frames_and_keep_serving() {
    let rt = runtime();
    let server = rt.block_on(streaming::start(|a| {
        a.ws_max_frame_bytes = MAX_FRAME;
    }));
    let frames = proptest::collection::vec(client_frame(), 1..10);
    let case = std::sync::atomic::AtomicUsize::new(0);
    run("frames over a device socket", 32, frames, |frames| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(fuzz_socket(&server, &format!("fz-ws-{}", n % 4), &frames))
    });
    run("device ids in the socket URL", 24, device_id(), |id| {
        rt.block_on(hostile_id(&server, &id))
    });

    // No poisoned state: a well-behaved device still gets a prediction.
    rt.block_on(async {
        let mut ws = streaming::ws_connect(&server.ws_url("/v1/ws/devices/fz-ws-after"), None)
            .await
            .expect("upgrade");
        let welcome = streaming::ws_next_json(&mut ws).await.expect("welcome");
        assert_eq!(welcome["type"], "welcome");
        let t0 = streaming::next_second(Duration::ZERO);
        let seconds = streaming::window_seconds(&server.core);
        for k in 0..=seconds {
            for (m, chunk) in streaming::second_of_chunks(&server.core, "fz-ws-after", t0, k)
                .into_iter()
                .enumerate()
            {
                let frame =
                    streaming::binary_frame(m as u16, chunk.start_unix_nanos, &chunk.samples, 3);
                ws.send(WsMessage::Binary(frame.into()))
                    .await
                    .expect("send");
            }
        }
        let first_full = t0 + seconds as i64 * SECOND;
        loop {
            let frame = streaming::ws_next_json(&mut ws).await.expect("socket open");
            assert_ne!(frame["type"], "error", "a valid frame was refused: {frame}");
            if frame["type"] == "prediction"
                && frame["window_end_unix_nanos"].as_i64() >= Some(first_full)
            {
                break;
            }
        }
    });
}
