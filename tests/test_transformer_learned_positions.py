"""Table 3's mini-tier variants of the Transformer: row (E), learned positional embeddings
(`reproductions.transformer.learned_positions`), checked against the sinusoidal model itself
(the same weights with the table set to the sinusoids give the same outputs, bit for bit), and
row (A), one head of the same d_model (the same parameters and computation as several heads)."""

import pytest
import torch

from evals.config import resolve
from evals.record import load_record
from evals.spec import load_spec
from evals.tier_runner import run_one
from reproductions.transformer import learned_positions as lp
from reproductions.transformer.encdec import EOS, Transformer, beam_search, label_smoothed_nll
from reproductions.transformer.layers import sinusoidal_table


def _pair(seed=0, vocab=30, d=16, max_len=64):
    torch.manual_seed(seed)
    sinusoidal = Transformer(vocab, d, 2, 1, 32, 0.0, "sinusoidal", max_len).eval()
    torch.manual_seed(seed)
    learned = lp.LearnedPositionTransformer(vocab, d, 2, 1, 32, 0.0, max_len).eval()
    return sinusoidal, learned


def test_same_seed_starts_every_other_weight_as_the_sinusoidal_model():
    sinusoidal, learned = _pair()
    a, b = sinusoidal.state_dict(), learned.state_dict()
    assert set(b) - set(a) == {"pos_embedding.weight"} and set(a) <= set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    std = learned.pos_embedding.weight.std().item()
    assert 0.5 * 16 ** -0.5 < std < 1.5 * 16 ** -0.5  # N(0, d_model^-0.5)


def test_with_the_table_set_to_the_sinusoids_the_outputs_are_the_sinusoidal_models():
    sinusoidal, learned = _pair(seed=3)
    src, tgt = torch.randint(3, 30, (2, 9)), torch.randint(3, 30, (2, 7))
    assert not torch.allclose(sinusoidal(src, tgt), learned(src, tgt))
    with torch.no_grad():
        learned.pos_embedding.weight.copy_(sinusoidal_table(64, 16))
    assert torch.equal(sinusoidal(src, tgt), learned(src, tgt))
    one = torch.tensor([[5, 6, 7, EOS]])
    assert beam_search(sinusoidal, one, 4, 0.6, 5) == beam_search(learned, one, 4, 0.6, 5)


def test_the_table_is_a_parameter_that_learns_the_positions_it_sees():
    _, learned = _pair(seed=1)
    learned.train()
    assert any(p is learned.pos_embedding.weight for p in learned.parameters())
    src, tgt = torch.randint(3, 30, (4, 6)), torch.randint(3, 30, (4, 5))
    label_smoothed_nll(learned(src, tgt[:, :-1]), tgt[:, 1:], 0.1).backward()
    grad = learned.pos_embedding.weight.grad
    assert grad is not None and (grad[:6].abs().sum(dim=1) > 0).all()   # the positions used
    assert torch.count_nonzero(grad[6:]) == 0                            # no other row


def test_learned_positions_break_the_bag_of_words():
    _, learned = _pair(seed=2)
    src, perm = torch.tensor([[5, 6, 7, 8, EOS]]), torch.tensor([3, 0, 2, 1, 4])
    out, _ = learned.encode(src)
    out_perm, _ = learned.encode(src[:, perm])
    assert not torch.allclose(out[:, perm], out_perm, atol=1e-5)
    with pytest.raises(ValueError, match="max_positions"):
        learned.encode(torch.randint(3, 30, (1, 65)))


def test_translator_config_save_and_load(tmp_path):
    cfg = lp.Config(d_model=16, n_heads=2, n_layers=1, d_ff=32, train_sentences=20, test_sentences=2,
                    max_positions=40, max_len_offset=3)
    assert cfg.positional == "learned"
    torch.manual_seed(0)
    model = lp.build(cfg, seed=1)
    assert isinstance(model.model, lp.LearnedPositionTransformer)
    torch.manual_seed(0)
    base = Transformer(len(model.vocab), 16, 2, 1, 32, 0.1, "sinusoidal")
    assert model.num_parameters() == sum(p.numel() for p in base.parameters()) + 40 * 16
    model.save(tmp_path / "m.safetensors")
    torch.manual_seed(9)
    again = lp.build(cfg, seed=1).load(tmp_path / "m.safetensors")
    assert torch.equal(again.model.pos_embedding.weight, model.model.pos_embedding.weight)
    assert again.translate([model.held_out()[0][0]]) == model.translate([model.held_out()[0][0]])
    with pytest.raises(ValueError, match="positional"):
        lp.build(lp.Config(positional="sinusoidal"))


def test_one_head_has_the_same_parameters_and_computation_as_several():
    """Row (A) keeps d_model: h heads of d_k = d_model / h, so one head of d_k = d_model has the same
    projection matrices (the paper: 'keeping the amount of computation constant')."""
    counts = [sum(p.numel() for p in Transformer(50, 32, h, 1, 64, 0.0).parameters()) for h in (1, 2, 4)]
    assert counts[0] == counts[1] == counts[2]


def test_learned_positions_arm_through_the_harness(run_opts):
    spec = load_spec("transformer")
    rec = load_record(run_one(resolve(spec, "smoke", "learned_pos", 1), run_opts))
    assert rec.status == "ok" and rec.module == "reproductions.transformer.learned_positions"
    assert rec.config["positional"] == "learned"
    assert 0 <= rec.metrics["bleu"] <= 100
    assert "reproductions/transformer/learned_positions.py" in rec.provenance.source_files
