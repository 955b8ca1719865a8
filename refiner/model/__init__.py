"""The refiner model: a CNN encoder, a Mamba temporal core and a residual head (see refiner.model.refiner)."""

from refiner.model.mamba import Mamba, make_mamba, selective_scan_ref
from refiner.model.refiner import Refiner, RefinerOutput

__all__ = ["Mamba", "Refiner", "RefinerOutput", "make_mamba", "selective_scan_ref"]
