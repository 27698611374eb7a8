//! Pre-encoded chunk messages. Each (device, modality) gets one template built at connect time; sending a
//! chunk copies the template into the transport's buffer with the chunk's timestamp (and, for recorded
//! data, its samples) written in place — no per-sample allocation, no protobuf or JSON serializer on the
//! hot path. Formats are those of docs/protocol.md: the `crossl.v1.StreamRequest` protobuf (gRPC), the
//! 16-byte-header binary frame and the JSON text frame (WebSocket).

use std::io::Write as _;

use bytes::BufMut;
use prost::Message as _;

use crossl_serve::proto;

/// How chunks travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireFormat {
    /// A protobuf `StreamRequest { chunk }` (the gRPC message, without the 5-byte gRPC frame prefix).
    Grpc,
    /// The WebSocket binary frame.
    WsBinary,
    /// The WebSocket JSON text frame.
    WsJson,
}

/// Placeholder timestamp of the protobuf template: the smallest value whose varint takes 9 bytes, as
/// every current unix-nanosecond time does (2^56 ns ≈ 1972 … 2^63 ns ≈ 2262).
const VARINT9_MIN: i64 = 1 << 56;

/// One chunk message with two holes: the timestamp and the samples.
#[derive(Clone, Debug)]
pub struct FrameTemplate {
    format: WireFormat,
    bytes: Vec<u8>,
    /// `bytes[ts_at..ts_end]` is the placeholder timestamp.
    ts_at: usize,
    ts_end: usize,
    /// `bytes[samples_at..samples_end]` are the template's own samples.
    samples_at: usize,
    samples_end: usize,
    /// f32 values per chunk (samples × channels).
    values: usize,
    channels: usize,
}

impl FrameTemplate {
    /// The protobuf `StreamRequest` carrying a `SensorChunk` of `device_id`/`modality` with `samples`.
    pub fn grpc(device_id: &str, modality: &str, samples: &[f32], channels: usize) -> Self {
        let request = proto::StreamRequest {
            sequence: 0,
            kind: Some(proto::stream_request::Kind::Chunk(proto::SensorChunk {
                device_id: device_id.to_string(),
                modality: modality.to_string(),
                start_unix_nanos: VARINT9_MIN,
                samples: samples.to_vec(),
            })),
        };
        let bytes = request.encode_to_vec();
        // Field 3 (varint) of SensorChunk, then the 9-byte placeholder. Device ids and modality names are
        // ASCII (< 0x80) and cannot contain the placeholder's continuation bytes.
        let mut needle = vec![0x18];
        put_varint(&mut needle, VARINT9_MIN as u64);
        let ts_at = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .expect("the placeholder timestamp is in the encoded chunk")
            + 1;
        // Samples are the last field of the chunk, which is the last field of the request.
        let samples_at = bytes.len() - 4 * samples.len();
        Self {
            format: WireFormat::Grpc,
            ts_at,
            ts_end: ts_at + 9,
            samples_at,
            samples_end: bytes.len(),
            bytes,
            values: samples.len(),
            channels,
        }
    }

    /// The binary WebSocket frame of modality `index` (manifest order).
    pub fn ws_binary(index: u16, samples: &[f32], channels: usize) -> Self {
        let mut bytes = Vec::with_capacity(16 + 4 * samples.len());
        bytes.push(0xC5);
        bytes.push(1);
        bytes.extend_from_slice(&index.to_le_bytes());
        bytes.extend_from_slice(&((samples.len() / channels) as u32).to_le_bytes());
        bytes.extend_from_slice(&0i64.to_le_bytes());
        for v in samples {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        Self {
            format: WireFormat::WsBinary,
            ts_at: 8,
            ts_end: 16,
            samples_at: 16,
            samples_end: bytes.len(),
            bytes,
            values: samples.len(),
            channels,
        }
    }

    /// The JSON WebSocket frame `{"modality", "start_unix_nanos", "samples": [[…], …]}`.
    pub fn ws_json(modality: &str, samples: &[f32], channels: usize) -> Self {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"{\"modality\":");
        bytes.extend_from_slice(
            serde_json::to_string(modality)
                .expect("a string serializes")
                .as_bytes(),
        );
        bytes.extend_from_slice(b",\"start_unix_nanos\":");
        let ts_at = bytes.len();
        bytes.push(b'0');
        let ts_end = bytes.len();
        bytes.extend_from_slice(b",\"samples\":");
        let samples_at = bytes.len();
        write_json_rows(&mut bytes, samples, channels);
        let samples_end = bytes.len();
        bytes.push(b'}');
        Self {
            format: WireFormat::WsJson,
            bytes,
            ts_at,
            ts_end,
            samples_at,
            samples_end,
            values: samples.len(),
            channels,
        }
    }

    pub fn format(&self) -> WireFormat {
        self.format
    }

    /// Values (samples × channels) per chunk.
    pub fn values(&self) -> usize {
        self.values
    }

    /// Size of the message with the template's own samples (a hint for buffers; JSON varies).
    pub fn len_hint(&self) -> usize {
        self.bytes.len() + 24
    }

    /// Writes the message for a chunk starting at `start_unix_nanos`, with `samples` (exactly
    /// [`values`](Self::values) of them) or the template's own.
    pub fn write(&self, out: &mut impl BufMut, start_unix_nanos: i64, samples: Option<&[f32]>) {
        out.put_slice(&self.bytes[..self.ts_at]);
        match self.format {
            WireFormat::Grpc => {
                assert!(
                    (VARINT9_MIN..=i64::MAX).contains(&start_unix_nanos),
                    "timestamp {start_unix_nanos} does not fit the 9-byte varint of the template"
                );
                put_varint(out, start_unix_nanos as u64);
            }
            WireFormat::WsBinary => out.put_i64_le(start_unix_nanos),
            WireFormat::WsJson => {
                let _ = write!(out.writer(), "{start_unix_nanos}");
            }
        }
        out.put_slice(&self.bytes[self.ts_end..self.samples_at]);
        match samples {
            None => out.put_slice(&self.bytes[self.samples_at..self.samples_end]),
            Some(values) => {
                assert_eq!(
                    values.len(),
                    self.values,
                    "a chunk keeps its template's length"
                );
                match self.format {
                    WireFormat::Grpc | WireFormat::WsBinary => {
                        for v in values {
                            out.put_f32_le(*v);
                        }
                    }
                    WireFormat::WsJson => write_json_rows(out, values, self.channels),
                }
            }
        }
        out.put_slice(&self.bytes[self.samples_end..]);
    }

    /// The message as one buffer (tests, and the WebSocket path that needs owned frames).
    pub fn to_vec(&self, start_unix_nanos: i64, samples: Option<&[f32]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len_hint());
        self.write(&mut out, start_unix_nanos, samples);
        out
    }
}

/// `[[x, y, z], …]`: rows of `channels` values, shortest round-trip decimal form of each f32.
fn write_json_rows(out: &mut impl BufMut, values: &[f32], channels: usize) {
    out.put_u8(b'[');
    for (i, row) in values.chunks(channels.max(1)).enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_u8(b'[');
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                out.put_u8(b',');
            }
            let _ = write!(out.writer(), "{v}");
        }
        out.put_u8(b']');
    }
    out.put_u8(b']');
}

/// Protobuf base-128 varint.
fn put_varint(out: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7F) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// The gRPC `Hello` request announcing a device and the modalities it sends.
pub fn grpc_hello(device_id: &str, modalities: &[String]) -> Vec<u8> {
    proto::StreamRequest {
        sequence: 0,
        kind: Some(proto::stream_request::Kind::Hello(proto::Hello {
            device_id: device_id.to_string(),
            modalities: modalities.to_vec(),
            metadata: [("client".to_string(), "crossl-loadgen".to_string())].into(),
        })),
    }
    .encode_to_vec()
}

/// The WebSocket hello text frame declaring the modalities a device sends.
pub fn ws_hello(modalities: &[String]) -> String {
    serde_json::json!({"type": "hello", "modalities": modalities}).to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crossl_serve::model::manifest::Manifest;

    use super::*;

    const T: i64 = 1_767_225_600_123_456_789;

    fn manifest() -> Manifest {
        Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/crossl-dsads"))
            .expect("bundled manifest")
    }

    #[test]
    fn grpc_template_is_the_protobuf_chunk_with_the_new_timestamp_and_samples() {
        let template = FrameTemplate::grpc("dev-7", "torso_gyro", &[1.0; 15], 3);
        for samples in [None, Some(&[0.5f32, -2.0, 3.25, 4.0, 5.0, 6.0][..])] {
            let samples = samples.map(|s| s.repeat(15 / s.len() + 1)[..15].to_vec());
            let bytes = template.to_vec(T, samples.as_deref());
            let decoded = proto::StreamRequest::decode(bytes.as_slice()).expect("valid protobuf");
            let Some(proto::stream_request::Kind::Chunk(chunk)) = decoded.kind else {
                panic!("a chunk request");
            };
            assert_eq!(chunk.device_id, "dev-7");
            assert_eq!(chunk.modality, "torso_gyro");
            assert_eq!(chunk.start_unix_nanos, T);
            assert_eq!(chunk.samples, samples.unwrap_or_else(|| vec![1.0; 15]));
        }
    }

    #[test]
    fn binary_frame_is_what_the_server_decodes() {
        let m = manifest();
        let values: Vec<f32> = (0..15).map(|i| i as f32 * 0.5 - 3.0).collect();
        let template = FrameTemplate::ws_binary(4, &[9.8; 15], 3);
        let bytes = template.to_vec(T, Some(&values));
        // docs/protocol.md: magic, version, modality index u16, sample count u32, start i64, f32 values.
        assert_eq!(&bytes[..4], &[0xC5, 1, 4, 0]);
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 5);
        assert_eq!(bytes.len(), 16 + 4 * 15);
        let chunk = crossl_serve::api::ws::decode_binary_frame(&bytes, "dev", &m)
            .expect("the server's decoder accepts it");
        assert_eq!(chunk.modality, m.modalities[4].name);
        assert_eq!(chunk.start_unix_nanos, T);
        assert_eq!(chunk.samples, values);
        let own = template.to_vec(T + 1, None);
        let chunk = crossl_serve::api::ws::decode_binary_frame(&own, "dev", &m).unwrap();
        assert_eq!(chunk.samples, vec![9.8; 15]);
        assert_eq!(chunk.start_unix_nanos, T + 1);
    }

    #[test]
    fn json_frame_has_the_documented_fields_and_rows() {
        let values = [9.8f32, -0.125, 1e-7, 0.0, 3.0, -42.5];
        let template = FrameTemplate::ws_json("torso_acc", &[0.0; 6], 3);
        let text = String::from_utf8(template.to_vec(T, Some(&values))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["modality", "samples", "start_unix_nanos"]);
        assert_eq!(v["modality"], "torso_acc");
        assert_eq!(v["start_unix_nanos"].as_i64(), Some(T));
        let rows: Vec<Vec<f32>> = serde_json::from_value(v["samples"].clone()).unwrap();
        assert_eq!(rows, vec![vec![9.8, -0.125, 1e-7], vec![0.0, 3.0, -42.5]]);
        let own: serde_json::Value =
            serde_json::from_slice(&template.to_vec(-5, None)).expect("valid JSON");
        assert_eq!(own["start_unix_nanos"], -5);
        let rows: Vec<Vec<f32>> = serde_json::from_value(own["samples"].clone()).unwrap();
        assert_eq!(rows, vec![vec![0.0; 3]; 2]);
    }

    #[test]
    fn hellos_declare_the_modalities() {
        let names = vec!["torso_acc".to_string(), "torso_gyro".to_string()];
        let hello = proto::StreamRequest::decode(grpc_hello("d-1", &names).as_slice()).unwrap();
        let Some(proto::stream_request::Kind::Hello(h)) = hello.kind else {
            panic!("a hello");
        };
        assert_eq!((h.device_id.as_str(), h.modalities), ("d-1", names.clone()));
        let ws: serde_json::Value = serde_json::from_str(&ws_hello(&names)).unwrap();
        assert_eq!(
            ws,
            serde_json::json!({"type": "hello", "modalities": names})
        );
    }

    #[test]
    #[should_panic(expected = "9-byte varint")]
    fn grpc_template_refuses_timestamps_of_another_width() {
        FrameTemplate::grpc("d", "m", &[0.0; 3], 3).to_vec(1_000, None);
    }
}
