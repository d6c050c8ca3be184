"""Optimizers (placeholder, filled in below)."""
