"""CroSSL (cross-modal self-supervised learning through latent masking) for crossl-serve."""

__version__ = "0.1.0"
