"""Fast Inference from Transformers via Speculative Decoding (arXiv 2211.17192).

`speculative.py` is the paper's algorithm; `decoders.py` the KV-cache wrappers; `pair.py` the mini
tier (a draft and a target GPT on the code corpus); `measure.py` what it measures; `full.py` the
full tier (T5-XXL with T5-small); `hf_peer.py` the conversion to Hugging Face's GPT-2 for the
assisted-generation peer.
"""

from reproductions.speculative.pair import Config, build, data_fingerprint, dry_run_step, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
