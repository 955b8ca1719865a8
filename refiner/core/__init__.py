"""Foundations every layer uses: params and their validation, stores, errors, mp4 io, plug-in lookup."""
