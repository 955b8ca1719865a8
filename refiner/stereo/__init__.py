"""Stereo: right-eye synthesis for VR, convergence, and the both-eye report."""
