"""gRPC stubs of crossl.v1, generated from proto/ at build time (gen_stubs.py)."""
