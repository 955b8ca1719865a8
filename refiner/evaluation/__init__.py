"""Scoring: baselines, per-frame and temporal metrics, span reading, per-clip and aggregate reports."""
