"""Training: the refiner's losses, training loop, checkpoints, pre-training and the learned teacher."""
