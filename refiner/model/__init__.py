"""The refiner model: a CNN encoder, a Mamba temporal core and a residual head (see refiner.model.refiner)."""
