"""LLaVA: the visual tokens' splice (eq. 2) and the answer-only loss (eq. 3) against a naive
per-sample construction, the projector-only stage 1, the grid features, the generated data
against its own pixels, and the evaluator's scoring against greedy decoding."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from evals.contract import QuietRun
from evals.evaluators.visual_qa import VisualQAOptions, answer_spans, derive, visual_qa
from evals.record import EvalResult
from evals.tasks import visual_qa as vqa
from evals.tasks.captioned_shapes import COLOURS, SHAPES
from evals.tasks.images import COLOURS as RGB
from reproductions.common import trained_once as once
from reproductions.llava import llava as L

IMG = vqa.WORD_ID[vqa.IMAGE]
TINY = L.Config(vision_width=16, vision_layers=2, vision_heads=2, clip_text_width=16, clip_text_layers=1,
                clip_text_heads=2, clip_embed_dim=16, clip_n_train=32, clip_steps=2, clip_batch_size=16, n_layer=1,
                n_head=2, n_embd=16, lm_n_docs=32, lm_steps=2, lm_batch_size=8, n_train=32, stage1_steps=2,
                stage1_batch_size=8, stage2_steps=2, stage2_batch_size=8, stage2_lr=1e-3, log_every=1)


def naive_splice(text, tokens, mask, inserts):
    """Per sample, a Python list: text vectors up to the marker, the N visual vectors, the rest; a
    label is the token where it is an answer, else ignored."""
    xs, ys = [], []
    for b in range(len(tokens)):
        x, y = [], []
        for t in range(tokens.shape[1]):
            if tokens[b, t] == IMG:
                x += list(inserts[b])
                y += [L.IGNORE] * len(inserts[b])
            else:
                x.append(text[b, t])
                y.append(int(tokens[b, t]) if mask[b, t] else L.IGNORE)
        xs.append(torch.stack(x))
        ys.append(torch.tensor(y))
    return torch.stack(xs), torch.stack(ys)


def random_batch(b=5, t=12, n=4, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(5, len(vqa.VOCAB), (b, t), generator=g)
    tokens[torch.arange(b), torch.randint(0, t, (b,), generator=g)] = IMG   # the marker anywhere, row by row
    mask = torch.rand(b, t, generator=g) < 0.4
    return torch.randn(b, t, d, generator=g), tokens, mask, torch.randn(b, n, d, generator=g)


def test_splice_matches_naive_construction():
    text, tokens, mask, inserts = random_batch()
    x, labels = L.splice(text, tokens, mask, inserts)
    nx, ny = naive_splice(text, tokens, mask, inserts)
    assert torch.equal(x, nx) and torch.equal(labels, ny)
    p = (tokens == IMG).int().argmax(1)
    for b in range(len(tokens)):                      # the visual tokens sit exactly at the marker
        assert torch.equal(x[b, p[b]:p[b] + inserts.shape[1]], inserts[b])
        assert (labels[b, p[b]:p[b] + inserts.shape[1]] == L.IGNORE).all()


def test_splice_needs_exactly_one_marker():
    text, tokens, mask, inserts = random_batch()
    tokens[0, tokens[0] == IMG] = 7
    with pytest.raises(ValueError, match="exactly one image marker"):
        L.splice(text, tokens, mask, inserts)
    tokens[0, :2] = IMG
    with pytest.raises(ValueError, match="exactly one image marker"):
        L.splice(text, tokens, mask, inserts)


def test_answer_loss_is_mean_nll_of_answer_tokens_only():
    text, tokens, mask, inserts = random_batch(seed=1)
    _, labels = L.splice(text, tokens, mask, inserts)
    logits = torch.randn(*labels.shape, len(vqa.VOCAB), generator=torch.Generator().manual_seed(2))
    terms = [-F.log_softmax(logits[b, j - 1], -1)[labels[b, j]] for b in range(len(labels))
             for j in range(1, labels.shape[1]) if labels[b, j] != L.IGNORE]
    assert len(terms) == int((labels[:, 1:] != L.IGNORE).sum()) > 0
    assert L.answer_loss(logits, labels) == pytest.approx(torch.stack(terms).mean().item(), rel=1e-6)


def test_splice_tokens_for_the_oracle_and_the_blind_arm():
    data = vqa.make_visual_qa(6, split="test")
    tokens, mask = vqa.instruction_batch(data)
    desc = vqa.description_ids(data)
    out, m = L.splice_tokens(tokens, mask, desc)
    for b in range(len(tokens)):
        row = [x for x in tokens[b].tolist() if x]
        at = row.index(IMG)
        expect = row[:at] + desc[b] + row[at + 1:]
        assert out[b, :len(expect)].tolist() == expect and not out[b, len(expect):].any()
        assert vqa.decode(out[b][m[b]]) == vqa.decode(tokens[b][mask[b]])   # the same answers, nothing else
    blind, bm = L.splice_tokens(tokens, mask, [[] for _ in desc])
    assert not (blind == IMG).any() and bm.sum() == mask.sum()


@pytest.mark.parametrize("mode", L.MODES)
def test_next_token_predictions_align_with_a_naive_sequence(mode):
    """The prediction at text position t is the arg-max of the LM at the state that reads text token
    t: built here by hand, one sample at a time, from the unspliced pieces."""
    torch.manual_seed(0)
    model = L.build(dataclasses.replace(TINY, mode=mode)).eval()
    data = vqa.make_visual_qa(3, split="test")
    tokens, _ = vqa.instruction_batch(data)
    pred = model.next_token_predictions(data.images, data.descriptions(), tokens)
    with torch.no_grad():
        for b in range(3):
            row = tokens[b, :int((tokens[b] != 0).sum())]
            at = int((row == IMG).nonzero())
            if mode == "image":
                ins = model.projector(model.visual_features(data.images[b:b + 1]))[0]
            elif mode == "oracle":
                ins = model.lm.wte(torch.tensor(vqa.ids(data.descriptions()[b])))
            else:
                ins = torch.zeros(0, TINY.n_embd)
            emb = model.lm.wte(row)
            seq = torch.cat([emb[:at], ins, emb[at + 1:]])
            arg = L.gpt_logits(model.lm, seq[None])[0].argmax(-1)
            for t in range(len(row)):
                if t == at:
                    continue   # the marker is not text the model reads; its prediction is the last inserted state's
                state = t if t < at else t + len(ins) - 1
                assert pred[b, t] == arg[state]


def test_visual_features_last_layer_is_vit_patch_tokens():
    model = L.build(dataclasses.replace(TINY, select_layer=-1)).eval()
    images = vqa.make_visual_qa(2).images
    assert torch.allclose(model.visual_features(images), model.vision.patch_tokens(images), atol=1e-6)
    model.select_layer = -2                              # before the last layer: no final LayerNorm, one block fewer
    vit = model.vision
    x = torch.cat([(vit.cls_token + vit.pos_embed[:, :1]).expand(2, -1, -1), vit.embed(images)], 1)
    assert torch.allclose(model.visual_features(images), vit.blocks[0](x)[:, 1:], atol=1e-6)


def test_stage1_trains_only_the_projector_and_the_vision_tower_stays_frozen():
    torch.manual_seed(0)
    model = L.build(TINY)
    data = vqa.make_visual_qa(16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokens, mask = vqa.caption_batch(data)
    model.lm.requires_grad_(False)
    L.run_stage(model, L.stage_data(model, data, tokens, mask, torch.device("cpu")), list(model.projector.parameters()),
                3, 4, 1e-2, TINY, 0, lambda *a, **k: None, "stage1")
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"projector.weight", "projector.bias"}
    assert not any(p.requires_grad for p in model.vision.parameters())


def drawn_objects(image: torch.Tensor, tol: float = 1e-6) -> set[tuple[int, int]]:
    """The (colour index, 3x3 cell) of each colour drawn in `image` (3 x H x W): the cell of the
    centre of mass of its pixels."""
    rgb = torch.tensor([RGB[c] for c in COLOURS])
    drawn = set()
    for c in range(len(COLOURS)):
        hit = (image - rgb[c][:, None, None]).abs().amax(0) < tol                # H x W: pixels of colour c
        if hit.any():
            ys, xs = hit.nonzero().float().mean(0) / image.shape[-1]          # the colour's centre of mass
            drawn.add((c, int(ys * 3) * 3 + int(xs * 3)))
    return drawn


def test_generated_scenes_match_their_pixels_and_answers():
    """Each described object's colour is drawn in its cell, no other colour is; answers follow
    from the scene by rules written here afresh."""
    data = vqa.make_visual_qa(200, size=48, split="test")
    for i, scene in enumerate(data.scenes):
        assert len({c for c, _, _ in scene.objects}) == len(scene.objects) == len({s for _, s, _ in scene.objects})
        assert drawn_objects(data.images[i]) == {(c, cell) for c, _, cell in scene.objects}   # each colour, in its cell
        for kind, q, a in data.conversations[i]:
            words = q.split()
            if kind == "count":
                assert a == ("one", "two", "three")[len(scene.objects) - 1]
            elif kind == "relative":
                names = [f"{COLOURS[c]} {SHAPES[s]}" for c, s, _ in scene.objects]
                rel = "left of" if "left" in words else "right of" if "right" in words else words[4]
                first = " ".join(words[2:4])
                second = " ".join(words[-3:-1])
                (ca, cb) = [scene.objects[names.index(n)][2] for n in (first, second)]
                ax, ay, bx, by = ca % 3, ca // 3, cb % 3, cb // 3
                truth = {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[rel]
                assert a == ("yes" if truth else "no")
            elif kind == "exists":
                present = f"{words[3]} {words[4]}" in [f"{COLOURS[c]} {SHAPES[s]}" for c, s, _ in scene.objects]
                assert a == ("yes" if present else "no")
    assert all(k != "shape" for c in vqa.make_visual_qa(100).conversations for k, _, _ in c)   # held out of training


@pytest.mark.parametrize("split", ["train", "test"])
def test_scenes_are_prefix_stable(split):
    """Scene i, its image and its conversation are the same whatever the number of scenes drawn."""
    small, large = vqa.make_visual_qa(5, split=split), vqa.make_visual_qa(50, split=split)
    assert torch.equal(small.images, large.images[:5])
    assert small.scenes == large.scenes[:5] and small.conversations == large.conversations[:5]
    assert small.image_first == large.image_first[:5]


CELL_OF = {"at the top left": 0, "at the top": 1, "at the top right": 2, "on the left": 3, "in the center": 4,
           "on the right": 5, "at the bottom left": 6, "at the bottom": 7, "at the bottom right": 8}


def test_example_images_show_the_scenes_of_the_example_conversations(tmp_path):
    """The k-th picture of `examples.png` (what a run publishes beside its record) is the scene of
    the k-th example conversation the evaluator keeps in the record (its first test scenes of a
    larger draw): the picture's pixels are that scene's, and the colours drawn in its cells are the
    ones the conversation's scene description names."""
    import numpy as np
    from PIL import Image

    n = 6
    L.save_examples(tmp_path / "examples.png", TINY, n=n)
    grid = torch.from_numpy(np.array(Image.open(tmp_path / "examples.png").convert("RGB"))).permute(2, 0, 1) / 255
    examples = visual_qa(_Echo(set()), TINY, VisualQAOptions(n=50, batch_size=50, examples=n)).protocol["examples"]
    data = vqa.make_visual_qa(50, TINY.image_size, split="test")
    side, pad = 4 * TINY.image_size, 2                                     # save_examples: 4x enlarged, padding 2
    assert grid.shape[1:] == (side + 2 * pad, n * (side + pad) + pad) and len(examples) == n
    for k, example in enumerate(examples):
        left = pad + k * (side + pad)
        tile = grid[:, pad:pad + side, left:left + side][:, ::4, ::4]
        assert (tile - data.images[k]).abs().max() <= 0.5 / 255 + 1e-6     # 8-bit PNG of the evaluated scene
        named = {(COLOURS.index(words[1]), CELL_OF[" ".join(words[3:])])
                 for words in (obj.split() for obj in example["scene"].split(" , "))}
        assert drawn_objects(tile, tol=0.01) == named


class _Echo:
    """A model that predicts the true next token except at chosen (row, position)s."""

    def __init__(self, wrong):
        self.wrong = wrong

    def next_token_predictions(self, images, descriptions, tokens):
        pred = torch.cat([tokens[:, 1:], torch.zeros_like(tokens[:, :1])], 1)
        for b, t in self.wrong:
            if b < len(tokens):
                pred[b, t] = (pred[b, t] + 1) % len(vqa.VOCAB)
        return pred


def test_evaluator_scores_exact_answers_and_derives():
    data = vqa.make_visual_qa(8, split="test")
    tokens, mask = vqa.instruction_batch(data)
    start, end = answer_spans(mask[0])[1]
    cfg = TINY
    r = visual_qa(_Echo({(0, end - 2)}), cfg, VisualQAOptions(n=8, batch_size=8, examples=0))  # the 2nd answer's <stop>
    total = sum(len(v) for v in r.samples.values())
    assert total == 24 and sum(sum(v) for v in r.samples.values()) == 23
    wrong_type = data.conversations[0][1][0]
    assert 0.0 in r.samples[f"correct_{wrong_type}"]
    result = EvalResult(evaluator="visual_qa", version=1, metrics=r.metrics, samples=r.samples, protocol=r.protocol)
    assert derive(result) == pytest.approx(r.metrics)


def test_train_shares_pretrained_parts_and_a_cached_run_equals_a_fresh_one(tmp_path):
    """As the harness does, torch is seeded with the run's seed before each `train`."""
    once._CACHE.clear()
    torch.manual_seed(3)
    b = L.train(dataclasses.replace(TINY, stage1=False), QuietRun(3, folder=tmp_path))   # fills the cache
    assert len(once._CACHE) == 2
    torch.manual_seed(3)
    a = L.train(TINY, QuietRun(3, folder=tmp_path))                                      # the CLIP tower and the LM from the cache
    assert len(once._CACHE) == 2 and torch.equal(a.vision.pos_embed, b.vision.pos_embed)
    once._CACHE.clear()
    torch.manual_seed(3)
    c = L.train(TINY, QuietRun(3, folder=tmp_path))                                      # afresh: the same bits
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    assert not torch.equal(a.projector.weight, b.projector.weight)      # stage 1 made a difference


# -- the full tier's pieces ----------------------------------------------------------------------
def test_gpt2_weights_map_onto_our_gpt_exactly():
    """Hugging Face's GPT-2 (its own code, tanh GELU, fused Conv1D attention) and our GPT with the
    mapped weights give the same logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from reproductions.llava import scienceqa as S
    from reproductions.transformer.gpt2_weights import gpt2_state_dict

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=32, n_layer=2, n_head=2, n_embd=16, bos_token_id=0,
                                    eos_token_id=0)).eval()
    ours = S.build_gpt(S.Config(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    ours.load_state_dict(gpt2_state_dict({k: v for k, v in hf.transformer.state_dict().items()
                                            if not k.endswith((".attn.bias", ".attn.masked_bias"))}, 2))
    x = torch.randint(0, 97, (3, 20))
    with torch.no_grad():
        assert torch.allclose(ours(x)[0], hf(x).logits, atol=1e-5)


def test_scienceqa_layout_prompts_and_answer_parsing(tmp_path):
    from evals.tasks import scienceqa as sqa

    root = sqa.write_scienceqa(tmp_path / "sqa")
    test = sqa.load_scienceqa(root, "test")
    assert [e.id for e in test] == ["test0", "test1", "test2"]
    assert test[0].image is not None and test[0].prompt.startswith(sqa.IMAGE) and test[1].image is None
    assert "Options: (A) cat (B) trout" in test[0].prompt and test[1].target.endswith("The answer is B.")
    assert sqa.read_image(test[0].image, 24).shape == (3, 24, 24)
    assert sqa.answer_letter("because fur. The answer is (C).") == "C"
    assert sqa.answer_letter("The answer is A. no wait, The answer is B.") == "B"
    assert sqa.answer_letter("no answer") is None
    with pytest.raises(FileNotFoundError, match="ScienceQA: no file"):
        sqa.load_scienceqa(tmp_path / "absent", "test")


def test_full_tier_encoding_masks_only_the_answer(tmp_path):
    from reproductions.llava import scienceqa as S
    from reproductions.llava.stand_ins import TINY_LM, write_tiny_gpt2

    weights, tokenizer, vocab = write_tiny_gpt2(tmp_path)
    from reproductions.clip.stand_ins import write_tiny_clip

    arch, clip_weights = write_tiny_clip(tmp_path / "clip", 224)
    model = S.build(S.Config(vision_model=str(arch), vision_checkpoint=str(clip_weights), lm_checkpoint=str(weights),
                             tokenizer=str(tokenizer), vocab_size=vocab, **TINY_LM))
    ids, mask = model.encode("<image>\nQuestion: Which?", "The answer is A.")
    assert ids.count(S.MARKER) == 1 and ids.index(S.MARKER) == len(model.tok.encode(S.HUMAN).ids)
    answer = model.tok.encode("The answer is A." + S.SEP).ids
    assert ids[-len(answer):] == answer and mask == [False] * (len(ids) - len(answer)) + [True] * len(answer)
    x, labels = model.inputs(torch.zeros(1, 3, 224, 224), [ids], [mask])
    n_visual = model.clip.model.visual.positional_embedding.shape[0] - 1
    assert x.shape[1] == len(ids) - 1 + n_visual
    assert labels[0][labels[0] != L.IGNORE].tolist() == answer
