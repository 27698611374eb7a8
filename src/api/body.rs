//! Streaming decoders for the numeric parts of JSON request bodies. Sensor values go straight from the
//! JSON text into one flat `f32` buffer per modality or tensor: no `serde_json::Value` tree and no
//! per-row vector is ever built, so a body costs about its own size plus 4 bytes per value instead of the
//! ~16–25× of a `Value` tree. What is wrong with the data (a row of the wrong width, a value that is not a
//! finite FP32 number) is recorded while decoding and reported afterwards with the same messages and
//! metric reasons as the checks it replaces.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::Error;

/// One modality's samples-major rows `[[c0, c1, …], …]` (the `/v1/predict` layout), flattened row-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampleRows {
    /// Every value, row after row.
    pub values: Vec<f32>,
    /// Number of rows.
    pub rows: usize,
    /// Values in the first row.
    pub width: usize,
    /// The first row whose length differs from the first row's: (row index, its length).
    pub first_odd_row: Option<(usize, usize)>,
}

impl SampleRows {
    /// Checks that every row holds `channels` values; the error names the first row that does not.
    pub fn check_channels(&self, name: &str, channels: usize) -> Result<(), Error> {
        let bad = if self.rows > 0 && self.width != channels {
            Some((0, self.width))
        } else {
            self.first_odd_row
        };
        match bad {
            None => Ok(()),
            Some((i, len)) => Err(Error::invalid(
                "wrong_channels",
                format!(
                    "modality {name:?} sample {i} has {len} values; the model expects {channels} channels"
                ),
            )),
        }
    }
}

/// An `f32` read with the deserializer's single-precision path; a number outside the FP32 range is an
/// error (it would become infinite).
struct F32(f32);

impl<'de> de::Deserialize<'de> for F32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = F32;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a finite FP32 number")
            }
            fn visit_f32<E: de::Error>(self, v: f32) -> Result<F32, E> {
                if v.is_finite() {
                    Ok(F32(v))
                } else {
                    Err(E::custom("number out of range for FP32"))
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<F32, E> {
                self.visit_f32(v as f32)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<F32, E> {
                Ok(F32(v as f32))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<F32, E> {
                Ok(F32(v as f32))
            }
        }
        deserializer.deserialize_f32(V)
    }
}

/// Appends one row's values to the shared buffer; yields the row's length.
struct RowSeed<'a>(&'a mut Vec<f32>);

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sample: an array of channel values")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while let Some(F32(v)) = seq.next_element()? {
            self.0.push(v);
            n += 1;
        }
        Ok(n)
    }
}

impl<'de> de::Deserialize<'de> for SampleRows {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SampleRows;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of samples, each an array of channel values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SampleRows, A::Error> {
                let mut out = SampleRows::default();
                while let Some(len) = seq.next_element_seed(RowSeed(&mut out.values))? {
                    if out.rows == 0 {
                        out.width = len;
                    } else if len != out.width && out.first_odd_row.is_none() {
                        out.first_odd_row = Some((out.rows, len));
                    }
                    out.rows += 1;
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(V)
    }
}

/// Why a tensor's data is not FP32 numbers.
#[derive(Clone, Debug, PartialEq)]
pub enum DataProblem {
    /// A number that is not finite as FP32.
    NonFinite(f64),
    /// Something that is not a number (its JSON text, or a short description).
    NotANumber(String),
}

impl DataProblem {
    /// The error for input `name` (same messages and reasons as the `Value`-based check it replaces).
    pub fn into_error(self, name: &str) -> Error {
        match self {
            DataProblem::NonFinite(v) => Error::invalid(
                "non_finite",
                format!("input {name:?} holds {v:e}, which is not a finite FP32 value"),
            ),
            DataProblem::NotANumber(text) => Error::invalid(
                "wrong_datatype",
                format!("input {name:?} holds {text}, expected FP32 numbers"),
            ),
        }
    }
}

/// An OIP tensor's `data`: numbers, arrays nested to any depth flattened row-major, straight into `f32`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorData {
    pub values: Vec<f32>,
    /// The first value that is not a finite FP32 number; decoding goes on (so the body's JSON is still
    /// checked whole) but keeps no more values.
    pub problem: Option<DataProblem>,
}

impl TensorData {
    fn note(&mut self, problem: DataProblem) {
        if self.problem.is_none() {
            self.problem = Some(problem);
            self.values = Vec::new();
        }
    }

    fn push(&mut self, v: f64) {
        let f = v as f32;
        if !f.is_finite() {
            self.note(DataProblem::NonFinite(v));
        } else if self.problem.is_none() {
            self.values.push(f);
        }
    }
}

/// Decodes one element (number or nested array) into the shared [`TensorData`].
struct Element<'a>(&'a mut TensorData);

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FP32 numbers, in arrays nested to any depth")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push(v);
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(v as f64);
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(v as f64);
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.note(DataProblem::NotANumber(v.to_string()));
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let text = serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}"));
        self.0.note(DataProblem::NotANumber(text));
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.note(DataProblem::NotANumber("null".into()));
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.0.note(DataProblem::NotANumber("an object".into()));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Element(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

impl<'de> de::Deserialize<'de> for TensorData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut data = TensorData::default();
        deserializer.deserialize_any(Element(&mut data))?;
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A maximal OIP tensor goes through the streaming visitor into one flat buffer; the allocation
    /// bound of a whole 4 MiB body is checked with a counting allocator in tests/body_memory.rs.
    #[test]
    fn a_large_oip_tensor_decodes_into_one_flat_buffer() {
        let rows = 64;
        let (channels, samples) = (3, 125);
        let mut text = String::from("[");
        for r in 0..rows {
            text.push_str(if r == 0 { "[" } else { ",[" });
            for c in 0..channels {
                text.push_str(if c == 0 { "[" } else { ",[" });
                for s in 0..samples {
                    if s > 0 {
                        text.push(',');
                    }
                    text.push_str(&format!("{}.25", (r * 7 + c * 3 + s) % 100));
                }
                text.push(']');
            }
            text.push(']');
        }
        text.push(']');
        let data: TensorData = serde_json::from_str(&text).expect("decodes");
        assert_eq!(data.problem, None);
        assert_eq!(data.values.len(), rows * channels * samples);
        assert_eq!(data.values[0], 0.25);
        assert_eq!(data.values[1], 1.25);
        assert_eq!(data.values[samples], 3.25, "second channel of row 0");
        // One buffer of f32s, at most doubled by growth: nothing per element beyond its 4 bytes.
        assert!(data.values.capacity() <= 2 * data.values.len());
    }

    #[test]
    fn tensor_data_records_the_first_bad_value_and_keeps_checking_the_json() {
        let data: TensorData = serde_json::from_str("[1, [2, 3e39], 4]").expect("json ok");
        assert_eq!(data.problem, Some(DataProblem::NonFinite(3e39)));
        let e = data
            .problem
            .clone()
            .map(|p| p.into_error("x_a"))
            .expect("problem");
        assert_eq!(e.reason(), "non_finite");
        assert!(e.to_string().contains("not a finite FP32 value"), "{e}");
        let data: TensorData = serde_json::from_str(r#"[1, "NaN", {"a": [1]}, null]"#).expect("ok");
        let e = data.problem.map(|p| p.into_error("x_a")).expect("problem");
        assert_eq!(e.reason(), "wrong_datatype");
        assert!(e.to_string().contains("\"NaN\""), "{e}");
        assert!(serde_json::from_str::<TensorData>("[1, [2,").is_err());
        let scalar: TensorData = serde_json::from_str("7").expect("a bare number");
        assert_eq!(scalar.values, vec![7.0]);
    }

    #[test]
    fn sample_rows_flatten_row_major_and_report_the_first_odd_row() {
        let body = r#"{"acc": [[1, 2, 3], [4, 5, 6.5]], "gyro": [[1, 2], [3], [4, 5, 6]]}"#;
        let m: HashMap<String, SampleRows> = serde_json::from_str(body).expect("decodes");
        let acc = &m["acc"];
        assert_eq!(acc.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        assert_eq!((acc.rows, acc.width, acc.first_odd_row), (2, 3, None));
        assert!(acc.check_channels("acc", 3).is_ok());
        let e = acc.check_channels("acc", 2).unwrap_err();
        assert_eq!(e.reason(), "wrong_channels");
        assert!(e.to_string().contains("sample 0 has 3 values"), "{e}");
        let e = m["gyro"].check_channels("gyro", 2).unwrap_err();
        assert!(e.to_string().contains("sample 1 has 1 values"), "{e}");
        let e = serde_json::from_str::<SampleRows>("[[1e39, 0, 0]]").unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        assert!(serde_json::from_str::<SampleRows>(r#"[["NaN"]]"#).is_err());
        let empty: SampleRows = serde_json::from_str("[]").expect("no rows");
        assert!(empty.check_channels("acc", 3).is_ok() && empty.values.is_empty());
    }
}
