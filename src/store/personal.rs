//! Per-device personalisation: a user labels spans of a device's own stream (`POST
//! /v1/devices/{id}/labels`), the embeddings of the stored windows inside those spans fit a small head for
//! that device, and from then on the device's streaming predictions carry the head's answer as `label` /
//! `probabilities` (`personalized: true`) and the general model's in `general`.
//!
//! The head is a **nearest class mean** on L2-normalised embeddings: one unit-length mean per labelled
//! class. Chosen over regularised logistic regression because it fits in one pass over the labelled
//! windows (no iterations, no learning rate or regularisation to tune per device; the time is exported as
//! `crossl_head_fit_seconds`), is exact to reproduce offline (`training/experiments/personalise.py`), is
//! stable with one labelled window per class, and updates by adding windows.
//!
//! Scoring a window with embedding `e` (normalised to unit length), `T` = temperature, `D` = reject
//! distance, `L` = labelled classes, `g` = the general model's probabilities:
//!
//! * each labelled class `c` scores `−‖e − μ_c‖² / T`;
//! * when some classes were never labelled, one more option, "unlabelled", scores `−D / T`;
//! * a softmax over these scores gives `q`; labelled classes get `q_c`, and the unlabelled option's mass
//!   is shared by the unlabelled classes in the general model's proportions (`q_u · g_u / Σ_{v∉L} g_v`);
//! * with `--personal-combine product`, the answer is `p_c ∝ q_c · g_c`, renormalised (`q` alone when
//!   the product vanishes); by default (`replace`) it is `q`.
//!
//! So by default a window close to a labelled class mean (closer than `D`) takes that label even when the
//! general model said otherwise; a window far from every labelled class keeps the general model's answer
//! among the classes never labelled; with every class labelled the head alone decides. The product lets a
//! confident general model outvote the head: offline on held-out DSADS subjects it lost less with one
//! labelled window per class (−0.013 macro-F1 against the general model, `q` alone −0.041;
//! `training/experiments/personalise.py`), but it also keeps the general model's confident answer on an
//! activity the user labelled otherwise — the case personalisation is for — so it is not the default.

use std::sync::Arc;

use dashmap::DashMap;
use prometheus::IntGauge;
use serde::{Deserialize, Serialize};

use super::Prediction;
use crate::error::Error;

/// Settings of the personal heads (from the flags).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadParams {
    /// Softmax temperature over squared distances (`--personal-temperature`).
    pub temperature: f32,
    /// Squared distance scoring the "unlabelled classes" option (`--personal-reject-distance`).
    pub reject_distance: f32,
    /// Spans kept per device (`--label-max-spans`).
    pub max_spans: usize,
    /// Labelled windows kept per device (`--label-max-windows`).
    pub max_windows: usize,
    /// How the head's distribution and the general model's combine (`--personal-combine`).
    pub combine: Combine,
}

/// How a personal head's answer uses the general model's (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Combine {
    /// The head's distribution replaces the general model's (which only shares out the mass of the
    /// classes never labelled).
    #[default]
    Replace,
    /// The product of the head's and the general model's distributions, renormalised.
    Product,
}

impl Default for HeadParams {
    fn default() -> Self {
        Self {
            temperature: 0.05,
            reject_distance: 0.25,
            max_spans: 64,
            max_windows: 512,
            combine: Combine::Replace,
        }
    }
}

/// One labelled span of a device's stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LabelSpan {
    /// One of the model's classes.
    pub label: String,
    /// Start of the span (device clock, unix nanoseconds).
    pub start_unix_nanos: i64,
    /// End of the span (device clock, unix nanoseconds).
    pub end_unix_nanos: i64,
    /// Stored windows that lay wholly inside the span when it was labelled.
    pub windows: usize,
    /// When the span was labelled (server clock, unix nanoseconds).
    pub labelled_at_unix_nanos: i64,
}

/// The embedding of one labelled window (L2-normalised).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelledWindow {
    pub window_end_unix_nanos: i64,
    pub class_index: usize,
    pub embedding: Vec<f32>,
}

/// Everything a device's head is fitted from; what the state store keeps per device. `version` counts
/// the updates (compare-and-set between concurrent labelling requests, possibly on different replicas).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceLabels {
    pub version: u64,
    pub spans: Vec<LabelSpan>,
    /// One per window end: a window labelled again takes the newer label.
    pub windows: Vec<LabelledWindow>,
}

impl DeviceLabels {
    /// Adds a span and the embeddings of its windows (`(window end, embedding)`, not yet normalised);
    /// refuses (409 `label_limit`) a span beyond the per-device bounds, leaving `self` unchanged.
    pub fn add_span(
        &mut self,
        span: LabelSpan,
        class_index: usize,
        windows: &[(i64, &[f32])],
        params: &HeadParams,
    ) -> Result<(), Error> {
        if self.spans.len() >= params.max_spans {
            return Err(Error::Conflict {
                reason: "label_limit",
                message: format!(
                    "this device already has {} labelled spans (--label-max-spans); DELETE its labels to start over",
                    self.spans.len()
                ),
            });
        }
        let new_ends = windows
            .iter()
            .filter(|(end, _)| !self.windows.iter().any(|w| w.window_end_unix_nanos == *end))
            .count();
        if self.windows.len() + new_ends > params.max_windows {
            return Err(Error::Conflict {
                reason: "label_limit",
                message: format!(
                    "labelling these {} windows would keep {} for this device, more than --label-max-windows ({}); \
                     label a shorter span or DELETE its labels to start over",
                    windows.len(),
                    self.windows.len() + new_ends,
                    params.max_windows
                ),
            });
        }
        for (end, embedding) in windows {
            let window = LabelledWindow {
                window_end_unix_nanos: *end,
                class_index,
                embedding: normalised(embedding),
            };
            match self
                .windows
                .iter_mut()
                .find(|w| w.window_end_unix_nanos == *end)
            {
                Some(existing) => *existing = window,
                None => self.windows.push(window),
            }
        }
        self.spans.push(span);
        Ok(())
    }

    /// Labelled windows per class index, ascending by class.
    pub fn windows_per_class(&self) -> Vec<(usize, usize)> {
        let mut counts: Vec<(usize, usize)> = Vec::new();
        for w in &self.windows {
            match counts.iter_mut().find(|(c, _)| *c == w.class_index) {
                Some((_, n)) => *n += 1,
                None => counts.push((w.class_index, 1)),
            }
        }
        counts.sort_unstable();
        counts
    }
}

/// `v / ‖v‖` (a zero vector stays zero).
pub fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter().map(|x| x / norm).collect()
    } else {
        vec![0.0; v.len()]
    }
}

/// A fitted head: one unit-length mean per labelled class.
#[derive(Clone, Debug, PartialEq)]
pub struct PersonalHead {
    /// Version of the labels it was fitted from.
    pub version: u64,
    /// Labelled class indices, ascending.
    classes: Vec<usize>,
    /// `classes.len() × dim`, each row unit length.
    means: Vec<f32>,
    dim: usize,
}

impl PersonalHead {
    /// Fits the head; `None` when no window has a usable embedding.
    pub fn fit(labels: &DeviceLabels) -> Option<Self> {
        let dim = labels.windows.iter().map(|w| w.embedding.len()).max()?;
        if dim == 0 {
            return None;
        }
        let mut classes: Vec<usize> = Vec::new();
        let mut sums: Vec<Vec<f32>> = Vec::new();
        for w in labels
            .windows
            .iter()
            .filter(|w| w.embedding.len() == dim && w.embedding.iter().any(|x| *x != 0.0))
        {
            let i = match classes.iter().position(|c| *c == w.class_index) {
                Some(i) => i,
                None => {
                    classes.push(w.class_index);
                    sums.push(vec![0.0; dim]);
                    classes.len() - 1
                }
            };
            for (s, x) in sums[i].iter_mut().zip(&w.embedding) {
                *s += x;
            }
        }
        if classes.is_empty() {
            return None;
        }
        let mut order: Vec<usize> = (0..classes.len()).collect();
        order.sort_unstable_by_key(|&i| classes[i]);
        Some(Self {
            version: labels.version,
            classes: order.iter().map(|&i| classes[i]).collect(),
            means: order.iter().flat_map(|&i| normalised(&sums[i])).collect(),
            dim,
        })
    }

    /// Labelled class indices, ascending.
    pub fn classes(&self) -> &[usize] {
        &self.classes
    }

    /// The personal distribution over all classes (see the module docs); `None` when the embedding does
    /// not fit the head (other size, zero or non-finite) or `general` is empty.
    pub fn probabilities(
        &self,
        general: &[f32],
        embedding: &[f32],
        params: &HeadParams,
    ) -> Option<Vec<f32>> {
        let n = general.len();
        if embedding.len() != self.dim
            || n == 0
            || self.classes.iter().any(|c| *c >= n)
            || !embedding.iter().all(|x| x.is_finite())
        {
            return None;
        }
        let e = normalised(embedding);
        if e.iter().all(|x| *x == 0.0) {
            return None;
        }
        let t = params.temperature.max(f32::MIN_POSITIVE);
        let mut scores: Vec<f32> = self
            .means
            .chunks_exact(self.dim)
            .map(|mean| {
                -mean
                    .iter()
                    .zip(&e)
                    .map(|(m, x)| (m - x) * (m - x))
                    .sum::<f32>()
                    / t
            })
            .collect();
        let unlabelled_mass: f32 = (0..n)
            .filter(|c| !self.classes.contains(c))
            .map(|c| general[c].max(0.0))
            .sum();
        let with_other = unlabelled_mass > 0.0;
        if with_other {
            scores.push(-params.reject_distance / t);
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f32 = exp.iter().sum();
        let mut out = vec![0.0f32; n];
        for (i, c) in self.classes.iter().enumerate() {
            out[*c] = exp[i] / total;
        }
        if with_other {
            let other = exp[self.classes.len()] / total;
            for (c, p) in out.iter_mut().enumerate() {
                if !self.classes.contains(&c) {
                    *p = other * general[c].max(0.0) / unlabelled_mass;
                }
            }
        }
        if params.combine == Combine::Product {
            let product: Vec<f32> = out
                .iter()
                .zip(general)
                .map(|(q, g)| q * g.max(0.0))
                .collect();
            let mass: f32 = product.iter().sum();
            if mass > 0.0 && mass.is_finite() {
                out = product.into_iter().map(|p| p / mass).collect();
            }
        }
        Some(out)
    }
}

/// The general model's answer, kept next to a personal one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GeneralAnswer {
    pub label: String,
    pub class_index: usize,
    /// In manifest class order.
    pub probabilities: Vec<f32>,
}

#[derive(Debug)]
struct HeadEntry {
    labels: Arc<DeviceLabels>,
    head: Option<Arc<PersonalHead>>,
}

/// The heads this replica applies, by device: the store itself with `--store memory`, a cache of the
/// devices this replica holds with a shared store. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct PersonalHeads {
    inner: Arc<HeadsInner>,
}

#[derive(Debug)]
struct HeadsInner {
    heads: DashMap<String, HeadEntry>,
    classes: Vec<String>,
    params: HeadParams,
    max_devices: usize,
    gauge: IntGauge,
    applied: prometheus::IntCounter,
}

impl PersonalHeads {
    /// Heads for a model with `classes`; at most `max_devices` devices; `gauge` counts the heads held,
    /// `applied` the predictions they answered.
    pub fn new(
        classes: Vec<String>,
        params: HeadParams,
        max_devices: usize,
        gauge: IntGauge,
        applied: prometheus::IntCounter,
    ) -> Self {
        Self {
            inner: Arc::new(HeadsInner {
                heads: DashMap::new(),
                classes,
                params,
                max_devices: max_devices.max(1),
                gauge,
                applied,
            }),
        }
    }

    /// No classes, default parameters, metrics not exported (stores built without a model: tests).
    pub fn disabled() -> Self {
        Self::new(
            Vec::new(),
            HeadParams::default(),
            usize::MAX,
            IntGauge::new("personal_heads", "not exported").expect("valid gauge"),
            prometheus::IntCounter::new("personalized", "not exported").expect("valid counter"),
        )
    }

    pub fn params(&self) -> &HeadParams {
        &self.inner.params
    }

    pub fn classes(&self) -> &[String] {
        &self.inner.classes
    }

    /// The labels kept for a device.
    pub fn labels(&self, device_id: &str) -> Option<Arc<DeviceLabels>> {
        self.inner
            .heads
            .get(device_id)
            .map(|e| Arc::clone(&e.labels))
    }

    /// Stores `labels` if the device's current version is `expected` (0 = none yet); false otherwise.
    /// Refuses (409 `label_limit`) a device beyond the bound on personalised devices.
    pub fn compare_and_set(
        &self,
        device_id: &str,
        labels: DeviceLabels,
        expected: u64,
    ) -> Result<bool, Error> {
        let inner = &*self.inner;
        if !inner.heads.contains_key(device_id) && inner.heads.len() >= inner.max_devices {
            return Err(Error::Conflict {
                reason: "label_limit",
                message: format!(
                    "{} devices are personalised already (--max-devices)",
                    inner.heads.len()
                ),
            });
        }
        let head = PersonalHead::fit(&labels).map(Arc::new);
        let entry = HeadEntry {
            labels: Arc::new(labels),
            head,
        };
        // Checked and replaced under the entry's lock: two concurrent requests cannot both win.
        let stored = match inner.heads.entry(device_id.to_string()) {
            dashmap::Entry::Occupied(mut o) if o.get().labels.version == expected => {
                o.insert(entry);
                true
            }
            dashmap::Entry::Vacant(v) if expected == 0 => {
                v.insert(entry);
                true
            }
            _ => false,
        };
        inner.gauge.set(inner.heads.len() as i64);
        Ok(stored)
    }

    /// Puts a device's labels (and its fitted head) in place unless a newer version is held already.
    pub fn install(&self, device_id: &str, labels: DeviceLabels) {
        let head = PersonalHead::fit(&labels).map(Arc::new);
        let entry = HeadEntry {
            labels: Arc::new(labels),
            head,
        };
        match self.inner.heads.entry(device_id.to_string()) {
            dashmap::Entry::Occupied(mut o) => {
                if o.get().labels.version <= entry.labels.version {
                    o.insert(entry);
                }
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(entry);
            }
        }
        self.inner.gauge.set(self.inner.heads.len() as i64);
    }

    /// Puts a device's labels (and its fitted head) in place whatever version is held (an authoritative
    /// read from the shared store).
    pub fn replace(&self, device_id: &str, labels: DeviceLabels) {
        self.inner.heads.remove(device_id);
        self.install(device_id, labels);
    }

    /// Drops a device's labels and head; whether there were any.
    pub fn remove(&self, device_id: &str) -> bool {
        let removed = self.inner.heads.remove(device_id).is_some();
        self.inner.gauge.set(self.inner.heads.len() as i64);
        removed
    }

    /// Keeps only the devices `keep` says yes to (a shared store's cache follows the devices held).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.inner.heads.retain(|id, _| keep(id));
        self.inner.gauge.set(self.inner.heads.len() as i64);
    }

    /// Devices with labels here.
    pub fn len(&self) -> usize {
        self.inner.heads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.heads.is_empty()
    }

    /// Answers a streaming prediction with the device's head, if it has one: `label`, `class_index` and
    /// `probabilities` become the personal ones, the general model's move to `general`.
    pub fn personalise(&self, prediction: &mut Prediction) {
        // One shard's read lock per prediction (no `is_empty` fast path: that would lock every shard).
        let Some(head) = self
            .inner
            .heads
            .get(&prediction.device_id)
            .and_then(|e| e.head.clone())
        else {
            return;
        };
        let Some(personal) = head.probabilities(
            &prediction.probabilities,
            &prediction.embedding,
            &self.inner.params,
        ) else {
            return;
        };
        let class_index = argmax(&personal);
        let label = self
            .inner
            .classes
            .get(class_index)
            .cloned()
            .unwrap_or_else(|| "unknown".to_string());
        let general = GeneralAnswer {
            label: std::mem::replace(&mut prediction.label, label),
            class_index: std::mem::replace(&mut prediction.class_index, class_index),
            probabilities: std::mem::replace(&mut prediction.probabilities, personal),
        };
        prediction.general = Some(Box::new(general));
        prediction.personalized = true;
        self.inner.applied.inc();
    }
}

/// `POST /v1/devices/{id}/labels` body.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelRequest {
    /// One of the model's classes (`GET /v1/model`, `manifest.classes`).
    pub label: String,
    /// Start of the span, device clock, unix nanoseconds (the clock of `window_end_unix_nanos`).
    pub start_unix_nanos: i64,
    /// End of the span (after the start).
    pub end_unix_nanos: i64,
}

/// What labelling a span needs besides the request.
#[derive(Clone, Copy, Debug)]
pub struct LabelContext<'a> {
    pub state: &'a dyn super::StateStore,
    pub heads: &'a PersonalHeads,
    /// Window length of the model (a window ending at `t` covers `[t − window, t)`).
    pub window_nanos: i64,
    /// Predictions kept per device (`--history-len`): how far back a span may reach.
    pub history_len: usize,
    /// Server clock now (`labelled_at_unix_nanos`).
    pub now_unix_nanos: i64,
    /// CPU time of merging and fitting.
    pub fit_seconds: &'a prometheus::Histogram,
}

/// Compare-and-set attempts before a labelling request gives up (409 `concurrent_update`).
const LABEL_ATTEMPTS: usize = 4;

/// Labels a span of a device's stored history: the embeddings of the stored windows lying wholly inside
/// `[start, end]` join the device's labels (a window labelled before takes the new label) and its head is
/// refitted. Errors: unknown class (400 `unknown_label`), empty span (400 `bad_span`), unknown device
/// (404), span not overlapping the stored history (400 `outside_history`), no whole window in it (400
/// `no_windows_in_span`), per-device bounds (409 `label_limit`), shared store down (503).
pub async fn add_span(
    cx: LabelContext<'_>,
    device_id: &str,
    request: &LabelRequest,
) -> Result<Arc<DeviceLabels>, Error> {
    let classes = cx.heads.classes();
    let class_index = classes
        .iter()
        .position(|c| *c == request.label)
        .ok_or_else(|| {
            Error::invalid(
                "unknown_label",
                format!(
                    "unknown label {:?}; the model's classes are: {}",
                    request.label,
                    classes.join(", ")
                ),
            )
        })?;
    if request.end_unix_nanos <= request.start_unix_nanos {
        return Err(Error::invalid(
            "bad_span",
            format!(
                "end_unix_nanos ({}) must be after start_unix_nanos ({})",
                request.end_unix_nanos, request.start_unix_nanos
            ),
        ));
    }
    let history = cx
        .state
        .history(device_id, None, cx.history_len.max(1))
        .await?
        .ok_or_else(|| Error::NotFound(format!("unknown device {device_id:?}")))?;
    let (Some(oldest), Some(newest)) = (history.first(), history.last()) else {
        return Err(Error::invalid(
            "outside_history",
            format!("device {device_id:?} has no stored predictions to label"),
        ));
    };
    let (kept_from, kept_to) = (
        oldest.window_end_unix_nanos - cx.window_nanos,
        newest.window_end_unix_nanos,
    );
    if request.end_unix_nanos <= kept_from || request.start_unix_nanos >= kept_to {
        return Err(Error::invalid(
            "outside_history",
            format!(
                "the span [{}, {}] lies outside the stored history of device {device_id:?}, which covers \
                 [{kept_from}, {kept_to}] (device clock, unix ns; the newest {} windows are kept)",
                request.start_unix_nanos, request.end_unix_nanos, cx.history_len
            ),
        ));
    }
    let inside: Vec<(i64, &[f32])> = history
        .iter()
        .filter(|p| {
            p.window_end_unix_nanos - cx.window_nanos >= request.start_unix_nanos
                && p.window_end_unix_nanos <= request.end_unix_nanos
                && !p.embedding.is_empty()
        })
        .map(|p| (p.window_end_unix_nanos, p.embedding.as_slice()))
        .collect();
    if inside.is_empty() {
        return Err(Error::invalid(
            "no_windows_in_span",
            format!(
                "no stored window of device {device_id:?} lies wholly inside [{}, {}]; a window is {} s long",
                request.start_unix_nanos,
                request.end_unix_nanos,
                cx.window_nanos as f64 / 1e9
            ),
        ));
    }
    let span = LabelSpan {
        label: request.label.clone(),
        start_unix_nanos: request.start_unix_nanos,
        end_unix_nanos: request.end_unix_nanos,
        windows: inside.len(),
        labelled_at_unix_nanos: cx.now_unix_nanos,
    };
    for _ in 0..LABEL_ATTEMPTS {
        let current = cx.state.labels(device_id).await?;
        let expected = current.as_ref().map_or(0, |l| l.version);
        let started = std::time::Instant::now();
        let mut labels = current.map(|l| (*l).clone()).unwrap_or_default();
        labels.add_span(span.clone(), class_index, &inside, cx.heads.params())?;
        labels.version = expected + 1;
        // The fit the serving replica will run, timed here.
        let _ = PersonalHead::fit(&labels);
        cx.fit_seconds.observe(started.elapsed().as_secs_f64());
        if cx
            .state
            .put_labels(device_id, labels.clone(), expected)
            .await?
        {
            return Ok(Arc::new(labels));
        }
    }
    Err(Error::Conflict {
        reason: "concurrent_update",
        message: format!(
            "the labels of device {device_id:?} kept changing under this request; retry"
        ),
    })
}

/// Index of the largest value (the first on ties; 0 for an empty slice).
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, v)| {
            if *v > bv { (i, *v) } else { (bi, bv) }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> HeadParams {
        HeadParams {
            max_spans: 3,
            max_windows: 4,
            ..HeadParams::default()
        }
    }

    fn span(label: &str) -> LabelSpan {
        LabelSpan {
            label: label.into(),
            start_unix_nanos: 0,
            end_unix_nanos: 10,
            windows: 1,
            labelled_at_unix_nanos: 0,
        }
    }

    fn labels_of(windows: &[(usize, [f32; 3])]) -> DeviceLabels {
        let mut labels = DeviceLabels::default();
        for (i, (class, e)) in windows.iter().enumerate() {
            labels
                .add_span(
                    span("x"),
                    *class,
                    &[(i as i64, &e[..])],
                    &HeadParams::default(),
                )
                .expect("within bounds");
        }
        labels
    }

    #[test]
    fn class_means_are_unit_length_means_of_normalised_embeddings() {
        let labels = labels_of(&[
            (2, [2.0, 0.0, 0.0]),
            (2, [0.0, 5.0, 0.0]),
            (0, [0.0, 0.0, 1.0]),
        ]);
        let head = PersonalHead::fit(&labels).expect("head");
        assert_eq!(head.classes(), &[0, 2]);
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let expected = [0.0, 0.0, 1.0, s, s, 0.0];
        assert!(
            head.means
                .iter()
                .zip(expected)
                .all(|(a, b)| (a - b).abs() < 1e-6),
            "{:?}",
            head.means
        );
    }

    #[test]
    fn labelled_classes_follow_distance_and_unlabelled_ones_keep_general_proportions() {
        // Classes 0 and 1 labelled; 2 and 3 never.
        let labels = labels_of(&[(0, [1.0, 0.0, 0.0]), (1, [0.0, 1.0, 0.0])]);
        let head = PersonalHead::fit(&labels).expect("head");
        let p = params();
        let general = [0.1, 0.1, 0.6, 0.2];
        // Right on class 1's mean: distance 0 to it, 2 to class 0, reject at 0.25.
        let near = head
            .probabilities(&general, &[0.0, 3.0, 0.0], &p)
            .expect("fits");
        let t = p.temperature;
        let (s0, s1, so) = ((-2.0f32 / t).exp(), 1.0f32, (-0.25f32 / t).exp());
        let total = s0 + s1 + so;
        let want = [s0 / total, s1 / total, so / total * 0.75, so / total * 0.25];
        for (a, b) in near.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{near:?} vs {want:?}");
        }
        assert_eq!(argmax(&near), 1);
        assert!((near.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        // Far from both labelled means: the unlabelled classes take the mass, in general proportions.
        let far = head
            .probabilities(&general, &[0.0, 0.0, 1.0], &p)
            .expect("fits");
        assert_eq!(argmax(&far), 2);
        assert!((far[2] / far[3] - 3.0).abs() < 1e-4, "{far:?}");
        assert!(far[0] < 1e-6 && far[1] < 1e-6, "{far:?}");
        // Every class labelled: the head alone decides.
        let all = labels_of(&[(0, [1.0, 0.0, 0.0]), (1, [0.0, 1.0, 0.0])]);
        let head = PersonalHead::fit(&all).expect("head");
        let two = head
            .probabilities(&[0.99, 0.01], &[0.1, 1.0, 0.0], &p)
            .expect("fits");
        assert_eq!(argmax(&two), 1);
        assert!((two.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        // Wrong embedding size or a zero embedding: no personal answer.
        assert!(head.probabilities(&[0.5, 0.5], &[1.0, 0.0], &p).is_none());
        assert!(
            head.probabilities(&[0.5, 0.5], &[0.0, 0.0, 0.0], &p)
                .is_none()
        );
    }

    #[test]
    fn the_product_rule_multiplies_in_the_general_model_and_lets_it_outvote_a_near_label() {
        let labels = labels_of(&[(0, [1.0, 0.0, 0.0]), (1, [0.0, 1.0, 0.0])]);
        let head = PersonalHead::fit(&labels).expect("head");
        let replace = params();
        let product = HeadParams {
            combine: Combine::Product,
            ..params()
        };
        let general = [0.1, 0.1, 0.6, 0.2];
        let q = head
            .probabilities(&general, &[0.0, 3.0, 0.0], &replace)
            .expect("fits");
        let p = head
            .probabilities(&general, &[0.0, 3.0, 0.0], &product)
            .expect("fits");
        let mass: f32 = q.iter().zip(general).map(|(q, g)| q * g).sum();
        for ((p, q), g) in p.iter().zip(&q).zip(general) {
            assert!((p - q * g / mass).abs() < 1e-6, "{p} vs {q}·{g}/{mass}");
        }
        // A window a little off class 1's mean, which the general model is sure is class 2: replace keeps
        // the user's label, the product the general model's.
        let sure = [0.0005, 0.0005, 0.998, 0.001];
        let off = [0.3, 3.0, 0.0];
        let kept = head.probabilities(&sure, &off, &replace).expect("fits");
        let outvoted = head.probabilities(&sure, &off, &product).expect("fits");
        assert_eq!(
            (argmax(&kept), argmax(&outvoted)),
            (1, 2),
            "{kept:?} {outvoted:?}"
        );
        assert!((outvoted.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn a_window_labelled_again_takes_the_newer_label_and_bounds_hold() {
        let p = params();
        let mut labels = DeviceLabels::default();
        let e = [1.0f32, 0.0, 0.0];
        labels
            .add_span(span("a"), 0, &[(1, &e[..]), (2, &e[..])], &p)
            .expect("ok");
        labels
            .add_span(span("b"), 1, &[(2, &e[..]), (3, &e[..])], &p)
            .expect("ok");
        assert_eq!(labels.windows.len(), 3);
        assert_eq!(labels.windows_per_class(), vec![(0, 1), (1, 2)]);
        // 2 more new windows would make 5 > 4.
        let err = labels
            .add_span(span("c"), 2, &[(4, &e[..]), (5, &e[..])], &p)
            .expect_err("over max_windows");
        assert_eq!(err.reason(), "label_limit");
        assert_eq!(labels.spans.len(), 2, "unchanged on refusal");
        labels
            .add_span(span("c"), 2, &[(4, &e[..])], &p)
            .expect("ok");
        let err = labels
            .add_span(span("d"), 2, &[(4, &e[..])], &p)
            .expect_err("over max_spans");
        assert_eq!(err.reason(), "label_limit");
    }

    #[test]
    fn predictions_are_personalised_only_for_devices_with_a_head() {
        let heads = PersonalHeads::new(
            vec!["a".into(), "b".into(), "c".into()],
            HeadParams::default(),
            10,
            IntGauge::new("g", "g").expect("gauge"),
            prometheus::IntCounter::new("c", "c").expect("counter"),
        );
        let mut labels = labels_of(&[(1, [1.0, 0.0, 0.0]), (2, [0.0, 1.0, 0.0])]);
        labels.version = 1;
        assert!(heads.compare_and_set("d1", labels.clone(), 0).expect("ok"));
        assert!(
            !heads
                .compare_and_set("d1", labels, 0)
                .expect("stale version")
        );
        let mut p = Prediction {
            device_id: "d1".into(),
            window_end_unix_nanos: 5,
            label: "a".into(),
            class_index: 0,
            probabilities: vec![0.8, 0.1, 0.1],
            embedding: vec![1.0, 0.05, 0.0],
            present_modalities: Vec::new().into(),
            timings: Default::default(),
            personalized: false,
            general: None,
        };
        let mut other = p.clone();
        other.device_id = "d2".into();
        heads.personalise(&mut p);
        heads.personalise(&mut other);
        assert!(p.personalized);
        assert_eq!(p.label, "b");
        assert_eq!(p.class_index, 1);
        let general = p.general.as_ref().expect("general kept");
        assert_eq!((general.label.as_str(), general.class_index), ("a", 0));
        assert_eq!(general.probabilities, vec![0.8, 0.1, 0.1]);
        assert!(!other.personalized && other.general.is_none() && other.label == "a");
        assert!(heads.remove("d1"));
        let mut again = other.clone();
        again.device_id = "d1".into();
        heads.personalise(&mut again);
        assert!(!again.personalized);
    }
}
