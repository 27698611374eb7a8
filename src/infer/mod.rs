//! Inference backends and the worker threads that own them.
