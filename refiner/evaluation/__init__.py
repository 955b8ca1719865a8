"""Scoring: every method's depth (method_depths, the one place it is made), baselines, per-frame, temporal and stereo
metrics, span reading, per-clip and aggregate reports."""
