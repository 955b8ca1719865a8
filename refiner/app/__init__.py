"""The ``refiner-video`` application: command line, settings, cache, output folder and defaults.yaml."""

FAST_OVERLAP = 2  # --fast: frames shared by consecutive windows (12-frame windows: 5 instead of 7 per 48 frames)
