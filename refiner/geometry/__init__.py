"""Camera and image geometry: the canonical frame, intrinsics, low-res grid, filters, masks, warps, and the VR right
eye with its convergence."""
