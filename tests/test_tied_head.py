"""reproductions/common/tied_head.py: the checkpoints of R1, s1 and DPO's agents."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from reproductions.common.tied_head import TiedHeadModule
from reproductions.transformer.gpt import GPT, GPTConfig

TINY = GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=8)


class _Pair(TiedHeadModule):
    def __init__(self, n_embd: int = 8):
        super().__init__()
        cfg = dataclasses.replace(TINY, n_embd=n_embd)
        self.policy, self.reference = GPT(cfg), GPT(cfg)


def test_the_file_leaves_out_every_tied_head_and_loading_restores_it_through_the_tie(tmp_path):
    torch.manual_seed(0)
    a = _Pair()
    a.save(tmp_path / "a.safetensors")
    saved = load_file(str(tmp_path / "a.safetensors"))
    assert not any(k.endswith("lm_head.weight") for k in saved)
    assert {k for k in a.state_dict() if not k.endswith("lm_head.weight")} == set(saved)
    torch.manual_seed(1)
    b = _Pair().load(tmp_path / "a.safetensors")
    for name in ("policy", "reference"):
        gpt = getattr(b, name)
        assert gpt.lm_head.weight is gpt.wte.weight          # still tied after loading
        assert torch.equal(gpt.lm_head.weight, getattr(a, name).wte.weight)
    x = torch.randint(16, (2, 8))
    assert torch.equal(a.policy(x)[0], b.policy(x)[0])


def test_another_agents_checkpoint_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "other.safetensors"
    _Pair().save(path)
    lone = TiedHeadModule()
    lone.policy = GPT(TINY)                                   # a policy and no reference
    with pytest.raises(KeyError, match=r"other\.safetensors.*unexpected \['reference\."):
        lone.load(path)
    bigger = _Pair(n_embd=16)                                 # the same names, other shapes
    with pytest.raises(RuntimeError, match="size mismatch"):
        bigger.load(path)
