//! The model folder and its tensors: manifest types, loading and validation (docs/model-contract.md).

pub mod input;
pub mod manifest;

pub use input::{ModelInput, ModelOutput};
pub use manifest::{Manifest, ModalitySpec};
