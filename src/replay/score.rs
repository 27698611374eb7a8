//! Online scoring of the predictions the replay client receives: confusion matrix, accuracy, macro-F1
//! (same definition as scikit-learn's `f1_score(average="macro")`: mean over the classes that occur in the
//! truth or the predictions, F1 = 0 where precision + recall = 0), and latency percentiles.

/// Square confusion matrix, rows = true class, columns = predicted class.
#[derive(Clone, Debug)]
pub struct ConfusionMatrix {
    classes: usize,
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Records one prediction. Indices outside the matrix are a caller bug.
    pub fn record(&mut self, truth: usize, predicted: usize) {
        assert!(
            truth < self.classes && predicted < self.classes,
            "class index out of range"
        );
        self.counts[truth * self.classes + predicted] += 1;
    }

    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.classes + predicted]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn correct(&self) -> u64 {
        (0..self.classes).map(|c| self.count(c, c)).sum()
    }

    /// Fraction of correct predictions; `None` before any prediction.
    pub fn accuracy(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| self.correct() as f64 / total as f64)
    }

    /// Per-class (support, F1) for classes present in the truth or the predictions.
    pub fn per_class_f1(&self) -> Vec<(usize, u64, f64)> {
        let mut out = Vec::new();
        for c in 0..self.classes {
            let tp = self.count(c, c);
            let support: u64 = (0..self.classes).map(|p| self.count(c, p)).sum();
            let predicted: u64 = (0..self.classes).map(|t| self.count(t, c)).sum();
            if support == 0 && predicted == 0 {
                continue;
            }
            // F1 = 2TP / (2TP + FP + FN) = 2TP / (support + predicted); 0 when both are 0 handled above.
            let f1 = 2.0 * tp as f64 / (support + predicted) as f64;
            out.push((c, support, f1));
        }
        out
    }

    /// Unweighted mean of per-class F1 over the classes in truth ∪ predictions; `None` when empty.
    pub fn macro_f1(&self) -> Option<f64> {
        let per_class = self.per_class_f1();
        (!per_class.is_empty())
            .then(|| per_class.iter().map(|&(_, _, f1)| f1).sum::<f64>() / per_class.len() as f64)
    }
}

/// Nearest-rank percentile (`q` in 0..=100) of unsorted samples; `None` when empty.
pub fn percentile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(pairs: &[(usize, usize)], classes: usize) -> ConfusionMatrix {
        let mut m = ConfusionMatrix::new(classes);
        for &(t, p) in pairs {
            m.record(t, p);
        }
        m
    }

    #[test]
    fn empty_matrix_has_no_scores() {
        let m = ConfusionMatrix::new(3);
        assert_eq!(m.accuracy(), None);
        assert_eq!(m.macro_f1(), None);
    }

    #[test]
    fn perfect_predictions_score_one() {
        let m = matrix(&[(0, 0), (1, 1), (1, 1), (2, 2)], 3);
        assert_eq!(m.accuracy(), Some(1.0));
        assert_eq!(m.macro_f1(), Some(1.0));
    }

    #[test]
    fn matches_scikit_learn_on_a_worked_example() {
        // y_true = [0, 0, 1, 1, 1, 2], y_pred = [0, 1, 1, 1, 0, 0]
        // sklearn: accuracy 0.5; f1 per class: 0 -> 2*1/(2+3)=0.4, 1 -> 2*2/(3+3)=0.6667, 2 -> 0;
        // macro = 0.35556
        let m = matrix(&[(0, 0), (0, 1), (1, 1), (1, 1), (1, 0), (2, 0)], 4);
        assert_eq!(m.accuracy(), Some(0.5));
        let f1 = m.macro_f1().unwrap();
        assert!((f1 - (0.4 + 2.0 / 3.0 + 0.0) / 3.0).abs() < 1e-12, "{f1}");
        // Class 3 occurs nowhere and is excluded, like sklearn's default labels.
        assert_eq!(m.per_class_f1().len(), 3);
    }

    #[test]
    fn a_class_only_predicted_counts_with_f1_zero() {
        // y_true = [0, 0], y_pred = [0, 1]: sklearn macro-F1 = (2/3 + 0) / 2
        let m = matrix(&[(0, 0), (0, 1)], 2);
        assert!((m.macro_f1().unwrap() - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    #[should_panic(expected = "class index out of range")]
    fn out_of_range_index_is_a_bug() {
        ConfusionMatrix::new(2).record(2, 0);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let xs = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&xs, 50.0), Some(3.0));
        assert_eq!(percentile(&xs, 0.0), Some(1.0));
        assert_eq!(percentile(&xs, 100.0), Some(5.0));
        assert_eq!(percentile(&xs, 90.0), Some(5.0));
        assert_eq!(percentile(&xs, 20.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
