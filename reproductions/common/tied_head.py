"""Checkpoints of an agent whose GPTs tie the output head to the token embedding (GPT-2's tying,
the Transformer's §3.4): each `lm_head.weight` is the same tensor as its `wte.weight`, so the file
leaves it out and loading puts it back through the tie. R1, s1 and DPO's agents save this way."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from evals.contract import SafetensorsModule

TIED = "lm_head.weight"


class TiedHeadModule(SafetensorsModule):
    """A `SafetensorsModule` whose state dict holds tied heads: saved without them, and loading
    fails, naming the file, on any other missing or unexpected tensor."""

    def save(self, path: Path) -> None:
        state = {k: v for k, v in self.state_dict().items() if not k.endswith(TIED)}
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))

    def load(self, path: Path) -> "TiedHeadModule":
        result = self.load_state_dict(load_file(str(path)), strict=False)
        missing = {k for k in result.missing_keys if not k.endswith(TIED)}
        if missing or result.unexpected_keys:
            raise KeyError(f"{path}: not this agent's checkpoint (missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(result.unexpected_keys)[:5]})")
        return self
