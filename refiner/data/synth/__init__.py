"""Synthetic clips: a small analytic ray caster of textured rooms, one scene per seed.

:mod:`~refiner.data.synth.shapes` (scene pieces), :mod:`~refiner.data.synth.scene` (a scene per seed and its camera
path), :mod:`~refiner.data.synth.raycast` (rendering) and :mod:`~refiner.data.synth.clips` (clips with sensor
effects, written to disk).
"""
