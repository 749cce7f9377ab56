"""FlashAttention (arXiv 2205.14135): tiled exact attention with the online softmax, forward and
backward, in PyTorch (`flash.py`) and as a Triton kernel (`triton_kernel.py`); the mini tier
measures its memory and speed against naive attention and torch's fused kernel (`measure.py`)."""

from reproductions.flash_attention.measure import Config, build, data_fingerprint, train

__all__ = ["Config", "build", "train", "data_fingerprint"]
