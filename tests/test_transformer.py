"""The Transformer paper: its loss, schedule, positions and beam search against independent
references; the generated languages; the WMT14 loader on a fixture in the real format; the
translation arm through the harness with a BLEU that recomputes from the record."""

import itertools
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evals.config import resolve
from evals.evaluators.bleu import corpus_bleu_from_samples
from evals.record import load_record
from evals.tier_runner import run_one
from evals.spec import load_spec
from reproductions.transformer import translation, translation_data as data
from reproductions.transformer.encdec import EOS, PAD, Transformer, beam_search, label_smoothed_nll, length_penalty, noam_lr
from reproductions.transformer.layers import sinusoidal_table


def test_label_smoothing_equals_torch_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(3, 7, 11), torch.randint(1, 11, (3, 7))
    target[0, 5:] = PAD
    expected = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD, label_smoothing=0.1)
    torch.testing.assert_close(label_smoothed_nll(logits, target, 0.1), expected)


def test_warmup_schedule_is_equation_3():
    assert noam_lr(4000, 512, 4000) == pytest.approx(512 ** -0.5 * 4000 ** -0.5)  # the peak
    assert noam_lr(1, 512, 4000) == pytest.approx(512 ** -0.5 * 4000 ** -1.5)
    assert noam_lr(16000, 512, 4000) == pytest.approx(noam_lr(4000, 512, 4000) / 2)  # 1/sqrt(step) decay
    assert max(range(1, 10000, 7), key=lambda s: noam_lr(s, 512, 4000)) in range(3990, 4010)


def test_sinusoids_follow_section_3_5():
    pe = sinusoidal_table(50, 16).numpy()
    for pos, i in [(0, 0), (7, 3), (49, 7)]:
        angle = pos / 10000 ** (2 * i / 16)
        assert pe[pos, 2 * i] == pytest.approx(math.sin(angle), abs=1e-6)
        assert pe[pos, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-6)


def test_without_positions_the_encoder_sees_a_bag_of_words():
    torch.manual_seed(0)
    src = torch.tensor([[5, 6, 7, 8, EOS]])
    perm = torch.tensor([3, 0, 2, 1, 4])
    for positional, equivariant in (("none", True), ("sinusoidal", False)):
        model = Transformer(20, 16, 2, 1, 32, 0.0, positional).eval()
        out, _ = model.encode(src)
        out_perm, _ = model.encode(src[:, perm])
        assert torch.allclose(out[:, perm], out_perm, atol=1e-5) == equivariant


def test_beam_search_finds_the_exhaustive_optimum_with_a_wide_beam():
    torch.manual_seed(3)
    model = Transformer(5, 8, 2, 1, 16, 0.0).eval()
    src = torch.tensor([[4]])
    max_len = 3  # src length 1 + offset 2
    with torch.no_grad():
        memory, mask = model.encode(src)

        def logp(prefix):
            return torch.log_softmax(model.decode(torch.tensor([[1] + prefix]), memory, mask)[0, -1], -1)

        best, best_seq = -math.inf, None
        for n in range(max_len):
            for words in itertools.product([0, 1, 3, 4], repeat=n):
                seq = list(words) + [EOS]
                score = sum(logp(seq[:i])[t].item() for i, t in enumerate(seq))
                if score / length_penalty(len(seq), 0.6) > best:
                    best, best_seq = score / length_penalty(len(seq), 0.6), list(words)
    assert beam_search(model, src, beam_size=64, alpha=0.6, max_len_offset=2) == best_seq
    # beam 1 is greedy decoding
    greedy, prefix = None, []
    with torch.no_grad():
        for _ in range(max_len):
            t = int(logp(prefix).argmax())
            if t == EOS:
                greedy = prefix
                break
            prefix = prefix + [t]
    assert beam_search(model, src, beam_size=1, alpha=0.6, max_len_offset=2) == (greedy if greedy is not None else prefix)


def test_generated_languages_reorder_and_agree():
    src, tgt = data.sentence_pair(random.Random(7))
    assert data.pairs(5, 3) == data.pairs(5, 3) and data.pairs(5, 3) != data.pairs(6, 3)
    vocab = set(data.vocabulary())
    for s, t in data.pairs(11, 200):
        s_words, t_words = s.split(), t.split()
        assert set(s_words) <= vocab and set(t_words) <= vocab
        assert len(t_words) <= len(s_words)
        verb = next(w for w in s_words if w in data.VERBS)
        assert t_words[-1].startswith(data.VERBS[verb])  # verb-final
        # the subject's determiner carries the nominative and the verb agrees with its gender and number
        subject_det = next(w for w in t_words if w in data.DETERMINERS.values())
        (d, g, n, c), = [key for key, v in data.DETERMINERS.items() if v == subject_det]
        assert c == "nom" and t_words[-1] == data.VERBS[verb] + data.VERB_ENDINGS[(g, n)]
    assert src and tgt
    assert not set(data.test_pairs(50)) & set(data.pairs(1, 5000))


def test_wmt14_loader_on_a_fixture_in_the_datasets_format(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [{"translation": {"de": f"Das Haus {i} ist klein .", "en": f"The house {i} is small ."}} for i in range(40)]
    DatasetDict({"train": Dataset.from_list(rows[:30]), "test": Dataset.from_list(rows[30:])}).save_to_disk(tmp_path / "wmt")
    cfg = translation.Config(dataset="wmt14", data_dir=str(tmp_path / "missing"))
    assert translation.required_data(cfg) and "wmt14" in translation.required_data(cfg)[0].lower()
    cfg = translation.Config(dataset="wmt14", data_dir=str(tmp_path / "wmt"), vocab_size=120, d_model=16, n_heads=2,
                             n_layers=1, d_ff=32, max_len_offset=3)
    assert translation.required_data(cfg) == []
    model = translation.build(cfg)
    assert model.held_out()[0] == ("The house 30 is small .", "Das Haus 30 ist klein .")
    assert model.vocab.decode(model.vocab.encode("Das Haus ist klein .")) == "Das Haus ist klein ."
    assert math.isfinite(translation.dry_run_step(model, cfg)["loss"])
    assert isinstance(model.translate(["The house is small ."])[0], str)
    assert "sha256:" in translation.data_fingerprint(cfg)


def test_smoke_translation_through_the_harness(run_opts):
    spec = load_spec("transformer")
    rec = load_record(run_one(resolve(spec, "smoke", "ours", 1), run_opts))
    assert rec.status == "ok"
    bleu = next(e for e in rec.evaluations if e.evaluator == "bleu")
    assert len(bleu.protocol["outputs"]) == 8 and 0 <= bleu.metrics["bleu"] <= 100
    assert corpus_bleu_from_samples(bleu.samples) == pytest.approx(bleu.metrics["bleu"])
    lm_eval = next(e for e in rec.evaluations if e.evaluator == "lm_loss")
    assert lm_eval.metrics == {} and lm_eval.protocol["scored"] is False
    assert "train_loss" in rec.curves and rec.provenance.data_fingerprint.startswith("generated")
    assert np.isfinite(rec.curves["train_loss"][-1][2])
