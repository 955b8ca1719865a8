"""Video metric depth refiner: a small temporal student over a frozen single-frame teacher."""
