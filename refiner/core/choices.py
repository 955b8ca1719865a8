"""The fixed choice lists of params.yaml, each stated once (config validates against them; the modules that
implement each choice check they cover it)."""

SOURCE_KINDS = ("video", "tum", "hypersim")  # refiner.data.adapters: how a real clip's source is read
CLIP_KINDS = ("synthetic", *SOURCE_KINDS)  # corpus.clips.<name>.kind
# refiner.data.synth: camera motion after the still segment
CAMERA_PATHS = ("still", "pan", "dolly", "forward", "orbit")
