"""Clips: synthetic rendering, ingest of real data, the clip stores, shards, preparation, datasets."""
