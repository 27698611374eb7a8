//! Bounded window queue and the batcher actor.
