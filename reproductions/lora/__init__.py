"""LoRA (arXiv 2106.09685): low-rank adapters on the GPT's W_q and W_v, against full fine-tuning
and PEFT's LoRA, on a held-out part of the code corpus."""

from reproductions.lora.finetune import Config, build, data_fingerprint, dry_run_step, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
