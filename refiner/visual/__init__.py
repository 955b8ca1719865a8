"""Depth as pictures: colour maps, per-frame exports, every video written to watch, and the clip viewer."""
