"""Checkpoints: safe reading, key tables, layouts."""
