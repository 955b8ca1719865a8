"""Depth as pictures: colour maps, mp4 exports and the clip viewer."""
