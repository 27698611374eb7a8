//! Stateless checks of a chunk or a device id: everything that can be refused before touching device state.

use crate::error::Error;
use crate::model::ModalitySpec;

/// Longest accepted device id, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 128;

/// Device ids are 1–128 characters of `[A-Za-z0-9._:-]` (safe in URLs, logs and file names).
pub fn device_id(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::invalid("bad_device_id", "device id is empty"));
    }
    if id.len() > MAX_DEVICE_ID_LEN {
        return Err(Error::invalid(
            "bad_device_id",
            format!(
                "device id is {} bytes long; at most {MAX_DEVICE_ID_LEN} are allowed",
                id.len()
            ),
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(Error::invalid(
            "bad_device_id",
            format!("device id {id:?} contains {c:?}; allowed are letters, digits and . _ : -"),
        ));
    }
    Ok(())
}

/// Shape and values of a chunk's samples; returns the number of rows.
pub fn samples(spec: &ModalitySpec, samples: &[f32], max_rows: usize) -> Result<usize, Error> {
    if samples.is_empty() {
        return Err(Error::invalid(
            "empty_chunk",
            format!("chunk of {:?} has no samples", spec.name),
        ));
    }
    if !samples.len().is_multiple_of(spec.channels) {
        return Err(Error::invalid(
            "channel_multiple",
            format!(
                "chunk of {:?} has {} values, not a multiple of its {} channels",
                spec.name,
                samples.len(),
                spec.channels
            ),
        ));
    }
    let rows = samples.len() / spec.channels;
    if rows > max_rows {
        return Err(Error::invalid(
            "too_many_samples",
            format!(
                "chunk of {:?} has {rows} samples; at most {max_rows} per chunk",
                spec.name
            ),
        ));
    }
    if let Some(pos) = samples.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "non_finite",
            format!(
                "chunk of {:?}: sample {} channel {} is not a finite number",
                spec.name,
                pos / spec.channels,
                pos % spec.channels
            ),
        ));
    }
    Ok(rows)
}

/// Chunk start must be positive and within `max_skew` of the server clock.
pub fn timestamp(start: i64, now: i64, max_skew_nanos: i64) -> Result<(), Error> {
    if start <= 0 {
        return Err(Error::invalid(
            "bad_timestamp",
            format!("start_unix_nanos {start} is not a positive unix time in nanoseconds"),
        ));
    }
    if (start as i128 - now as i128).abs() > max_skew_nanos as i128 {
        return Err(Error::invalid(
            "bad_timestamp",
            format!(
                "start_unix_nanos {start} is {:.1} s away from the server clock; at most {:.0} s allowed",
                (start as f64 - now as f64) / 1e9,
                max_skew_nanos as f64 / 1e9
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::manifest::tests::two_modality_manifest;

    #[test]
    fn reasons_are_stable() {
        let m = two_modality_manifest();
        let spec = &m.modalities[0];
        let reason = |r: Result<usize, Error>| r.unwrap_err().reason();
        assert_eq!(device_id("").unwrap_err().reason(), "bad_device_id");
        assert_eq!(device_id("a b").unwrap_err().reason(), "bad_device_id");
        assert_eq!(
            device_id(&"x".repeat(129)).unwrap_err().reason(),
            "bad_device_id"
        );
        device_id("watch-01:left.arm_2").expect("valid id");
        assert_eq!(
            m.require_modality("nope").unwrap_err().reason(),
            "unknown_modality"
        );
        assert_eq!(reason(samples(spec, &[], 10)), "empty_chunk");
        assert_eq!(reason(samples(spec, &[1.0; 4], 10)), "channel_multiple");
        assert_eq!(reason(samples(spec, &[1.0; 33], 10)), "too_many_samples");
        assert_eq!(
            reason(samples(spec, &[1.0, f32::NAN, 1.0], 10)),
            "non_finite"
        );
        assert_eq!(
            reason(samples(spec, &[1.0, 1.0, f32::INFINITY], 10)),
            "non_finite"
        );
        assert_eq!(samples(spec, &[1.0; 30], 10).expect("ok"), 10);
        assert_eq!(timestamp(0, 10, 5).unwrap_err().reason(), "bad_timestamp");
        assert_eq!(timestamp(100, 10, 5).unwrap_err().reason(), "bad_timestamp");
        timestamp(12, 10, 5).expect("within skew");
    }
}
