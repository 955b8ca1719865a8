"""The ``refiner-video`` application: command line, settings, cache, output folder and defaults.yaml."""
