//! The two admission queues (streaming windows, one-shot rows) behind one lock, and the rule that fills a
//! batch from them.

use std::collections::VecDeque;
use std::time::Instant;

use super::{Class, Job, Queued};
use crate::error::Error;

/// Why jobs were not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The class's queue has `free` of `capacity` places left.
    Full { free: usize, capacity: usize },
    /// The batcher is closing.
    Closed,
}

impl Refusal {
    /// Metric label.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Refusal::Full { .. } => "queue_full",
            Refusal::Closed => "shutdown",
        }
    }

    pub(super) fn into_error(self, class: Class, rows: usize) -> Error {
        match (self, class) {
            (Refusal::Closed, _) => {
                Error::Unavailable("shutting down: no new windows are accepted".into())
            }
            (Refusal::Full { .. }, Class::Streaming) => Error::ResourceExhausted {
                reason: "queue_full",
                message: "inference queue is full; retry later".into(),
            },
            (Refusal::Full { free, capacity }, Class::OneShot) => Error::ResourceExhausted {
                reason: "queue_full",
                message: format!(
                    "the one-shot inference queue is full ({rows} rows asked, {free} of {capacity} \
                     places free); retry later"
                ),
            },
        }
    }
}

#[derive(Debug)]
pub(super) struct Queues {
    streaming: VecDeque<Queued>,
    one_shot: VecDeque<Queued>,
    streaming_capacity: usize,
    one_shot_capacity: usize,
    closing: bool,
}

impl Queues {
    pub(super) fn new(streaming_capacity: usize, one_shot_capacity: usize) -> Self {
        Self {
            streaming: VecDeque::new(),
            one_shot: VecDeque::new(),
            streaming_capacity,
            one_shot_capacity,
            closing: false,
        }
    }

    /// Admits every job or none. Checked under the same lock as [`Queues::close`], so nothing is admitted
    /// after the actor has seen the batcher closed and empty.
    pub(super) fn admit(
        &mut self,
        class: Class,
        jobs: Vec<Job>,
        now: Instant,
    ) -> Result<(), Refusal> {
        if self.closing {
            return Err(Refusal::Closed);
        }
        let (queue, capacity) = match class {
            Class::Streaming => (&mut self.streaming, self.streaming_capacity),
            Class::OneShot => (&mut self.one_shot, self.one_shot_capacity),
        };
        let free = capacity.saturating_sub(queue.len());
        if jobs.len() > free {
            return Err(Refusal::Full { free, capacity });
        }
        queue.extend(jobs.into_iter().map(|job| Queued {
            job,
            enqueued_at: now,
        }));
        Ok(())
    }

    /// Moves jobs into `batch` until it holds `max_batch`. One-shot rows get up to `one_shot_share` slots
    /// of the batch first (counting those it already holds), streaming windows the rest, and one-shot rows
    /// fill what streaming leaves free. Returns how many jobs were moved.
    pub(super) fn take(
        &mut self,
        batch: &mut Vec<Queued>,
        one_shot_in_batch: &mut usize,
        max_batch: usize,
        one_shot_share: usize,
    ) -> usize {
        let before = batch.len();
        let room = |batch: &Vec<Queued>| max_batch.saturating_sub(batch.len());
        let reserved = one_shot_share
            .saturating_sub(*one_shot_in_batch)
            .min(room(batch))
            .min(self.one_shot.len());
        batch.extend(self.one_shot.drain(..reserved));
        let streaming = room(batch).min(self.streaming.len());
        batch.extend(self.streaming.drain(..streaming));
        let rest = room(batch).min(self.one_shot.len());
        batch.extend(self.one_shot.drain(..rest));
        *one_shot_in_batch += reserved + rest;
        batch.len() - before
    }

    pub(super) fn close(&mut self) {
        self.closing = true;
    }

    pub(super) fn is_closing(&self) -> bool {
        self.closing
    }

    /// Jobs waiting in one class's queue.
    pub(super) fn depth(&self, class: Class) -> usize {
        match class {
            Class::Streaming => self.streaming.len(),
            Class::OneShot => self.one_shot.len(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.streaming.len() + self.one_shot.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
