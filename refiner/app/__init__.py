"""The ``refiner-video`` application: command line, settings, cache, output folder and defaults.yaml."""

FAST_OVERLAP = 2  # --fast: frames shared by consecutive inference windows (24 frames: a new one every 22, not 12)
