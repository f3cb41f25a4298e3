"""Adapters: CAP as the SAM backend of the tools annotators run (docs/adapters.md)."""
