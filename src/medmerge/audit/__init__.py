"""Audits of the data around a run: train/eval leakage."""
