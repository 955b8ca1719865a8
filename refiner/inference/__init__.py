"""Inference: refining clips, test-time adaptation, noise ceiling, sinks and source-resolution output."""
