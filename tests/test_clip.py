"""CLIP (arXiv 2103.00020): Figure 3's loss against open_clip's ClipLoss and a per-pair formula
written out, the clipped temperature, zero-shot classification and prompt ensembling on hand
cases, the captioner's zero-shot score against a one-prompt-at-a-time forward pass, the
captioned-shapes generator's held-out classes, and a tiny end-to-end train."""

import math

import pytest
import torch
import torch.nn as nn
from open_clip import ClipLoss

from evals.contract import QuietRun, ZeroShotClassifier
from evals.evaluators import REGISTRY, derived_metrics
from evals.evaluators.zero_shot import ZeroShotOptions
from evals.tasks.captioned_shapes import (COLOURS, EOT, HELD_OUT, PLURAL, SEEN, SHAPES, TEMPLATES, VOCAB, WORD_ID,
                                          class_name, class_plural, make_captioned_shapes, prompts, tokenize)
from reproductions.clip import captioner, open_clip_baseline
from reproductions.clip.clip import (CLIP, Config, ContrastiveZeroShot, clip_loss, hidden_states, train,
                                     zero_shot_weights)

TINY = dict(image_size=16, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2, text_width=32,
            text_layers=1, text_heads=2, embed_dim=32, n_train=256, batch_size=32, lr=3e-3, weight_decay=0.0,
            warmup_steps=10, log_every=10)


def naive_clip_loss(img, txt, scale):
    """The symmetric InfoNCE pair by pair: -log softmax of the matching pair along its row and along
    its column, averaged over pairs, the two directions averaged."""
    n = len(img)
    img = [[x / math.sqrt(sum(y * y for y in v)) for x in v] for v in img.tolist()]
    txt = [[x / math.sqrt(sum(y * y for y in v)) for x in v] for v in txt.tolist()]
    s = [[scale * sum(a * b for a, b in zip(img[i], txt[j])) for j in range(n)] for i in range(n)]
    rows = sum(-s[i][i] + math.log(sum(math.exp(s[i][j]) for j in range(n))) for i in range(n)) / n
    cols = sum(-s[j][j] + math.log(sum(math.exp(s[i][j]) for i in range(n))) for j in range(n)) / n
    return (rows + cols) / 2


def test_loss_matches_open_clip_and_the_per_pair_formula():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    scale = torch.tensor(14.3, dtype=torch.float64)
    ours = clip_loss(img, txt, scale)
    ref = ClipLoss()(nn.functional.normalize(img, dim=-1), nn.functional.normalize(txt, dim=-1), scale)
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)
    assert ours.item() == pytest.approx(naive_clip_loss(img, txt, 14.3), rel=1e-10)
    # asymmetric case: the two directions differ, and the loss is their mean
    img[0] *= 0.0
    img[0, 0] = 1.0
    assert clip_loss(img, txt, scale).item() == pytest.approx(naive_clip_loss(img, txt, 14.3), rel=1e-10)


def test_loss_is_log_n_when_embeddings_carry_no_information():
    img, txt = torch.ones(8, 4), torch.ones(8, 4)
    assert clip_loss(img, txt, torch.tensor(50.0)).item() == pytest.approx(math.log(8), rel=1e-6)


def test_temperature_starts_at_0_07_and_the_logit_scale_is_clipped_at_100():
    model = CLIP(Config(**TINY))
    assert model.logit_scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        model.log_scale.fill_(10.0)  # exp(10) ~ 22,026
    scale = model.logit_scale()
    assert scale.item() == pytest.approx(100.0, rel=1e-6)
    scale.backward()
    assert model.log_scale.grad.item() == 0.0  # no gradient pushes it further beyond the clip


class Lookup(ContrastiveZeroShot, nn.Module):
    """A hand-built contrastive model: images are their own embeddings; a text's embedding is looked
    up by its words."""

    def __init__(self, table: dict[str, list[float]]):
        super().__init__()
        self.table = table
        self.w = nn.Parameter(torch.zeros(1))

    def encode_image(self, images):
        return images.flatten(1)

    def encode_text(self, tokens):
        words = [" ".join(VOCAB[i] for i in row[1:] if VOCAB[i] != EOT and i != 0) for row in tokens.tolist()]
        return torch.tensor([self.table[w] for w in words])

    def logit_scale(self):
        return torch.tensor(100.0)


def test_zero_shot_weights_average_normalised_embeddings():
    emb = torch.tensor([[[3.0, 0.0], [0.0, 0.5]], [[0.0, 2.0], [0.0, 7.0]]])
    w = zero_shot_weights(emb)
    assert torch.allclose(w[0], torch.tensor([1.0, 1.0]) / math.sqrt(2))  # not (3, 0.5) normalised
    assert torch.allclose(w[1], torch.tensor([0.0, 1.0]))
    assert torch.allclose(zero_shot_weights(emb[:, :1]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_prompt_ensemble_fixes_what_a_single_prompt_gets_wrong():
    # class A's single prompt points the wrong way; its other two prompts outvote it
    table = {"one red circle": [0.0, 1.0], "one small red circle": [1.0, 0.1], "one large red circle": [1.0, -0.1],
             "one green square": [0.6, 0.8], "one small green square": [0.6, 0.8], "one large green square": [0.6, 0.8]}
    model = Lookup(table)
    image = torch.tensor([[[[1.0, 0.05]]]])  # 1 x 1 x 1 x 2: an image of class A
    single = model.zero_shot_logits(image, [["one red circle"], ["one green square"]])
    ensemble = model.zero_shot_logits(image, [["one red circle", "one small red circle", "one large red circle"],
                                              ["one green square", "one small green square", "one large green square"]])
    assert single.argmax().item() == 1 and ensemble.argmax().item() == 0
    a = torch.nn.functional.normalize(torch.tensor([0.0, 1.0]) + torch.tensor([1.0, 0.1]) / math.hypot(1, 0.1)
                                      + torch.tensor([1.0, -0.1]) / math.hypot(1, 0.1), dim=0)
    expected = 100.0 * torch.nn.functional.normalize(image.flatten(1), dim=-1) @ a
    assert ensemble[0, 0].item() == pytest.approx(expected.item(), rel=1e-5)


def test_held_out_classes_never_appear_in_training_captions():
    data = make_captioned_shapes(3000, 16, split="train")
    text = "\n".join(data.captions)
    for k in HELD_OUT:
        assert class_name(k) not in text and class_plural(k) not in text
    for word in (*COLOURS, *SHAPES):  # yet every word does, each colour and shape in other pairings
        assert f" {word}" in text
    assert {data.classes[i] for i in data.labels.tolist()} == set(SEEN)
    assert len(SEEN) == 15 and len(HELD_OUT) == 10 and not set(SEEN) & set(HELD_OUT)
    # among the held-out classes each colour has two shapes and each shape two colours
    for c in range(len(COLOURS)):
        assert sum(k[0] == c for k in HELD_OUT) == 2 and sum(k[1] == c for k in HELD_OUT) == 2
    zs = make_captioned_shapes(300, 16, split="zero_shot")
    assert zs.classes == HELD_OUT
    for caption, label, count in zip(zs.captions, zs.labels.tolist(), zs.counts.tolist()):
        assert (class_name(HELD_OUT[label]) if count == 1 else class_plural(HELD_OUT[label])) in caption


def test_generator_is_deterministic_and_draws_the_caption_it_says():
    a, b = make_captioned_shapes(50, 24, seed=3), make_captioned_shapes(50, 24, seed=3)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.images, make_captioned_shapes(50, 24, seed=4).images)
    from evals.tasks.images import COLOURS as RGB
    for img, label in zip(a.images, a.labels.tolist()):
        rgb = torch.tensor(RGB[COLOURS[a.classes[label][0]]])
        assert (img == rgb[:, None, None]).all(0).any()  # the named colour is drawn


def test_tokenize_puts_eot_at_the_largest_id():
    t = tokenize(["one small red circle at the top left"])
    assert t[0, 0] == WORD_ID["<bos>"] and t.argmax(-1).item() == 9 and t[0, 9] == len(VOCAB) - 1
    assert prompts(HELD_OUT[:1], TEMPLATES)[0][3] == f"two small {COLOURS[0]} {PLURAL[SHAPES[0]]}"
    with pytest.raises(ValueError):
        tokenize(["a photo of a dog"])


def test_text_features_are_causal_and_ignore_padding():
    model = CLIP(Config(**TINY)).eval()
    t = tokenize(["one small red circle"])
    noisy = t.clone()
    noisy[0, 6:] = 5  # tokens after <eot>
    assert torch.allclose(model.encode_text(t), model.encode_text(noisy), atol=1e-6)


def test_captioner_zero_shot_score_is_the_prompt_log_likelihood():
    model = captioner.build(Config(**TINY)).eval()
    images = torch.rand(2, 3, 16, 16)
    texts = [["one red circle", "two large red circles"], ["one green square", "one small green square"]]
    scores = model.zero_shot_logits(images, texts)
    for i in range(2):
        for c in range(2):
            lls = []
            for text in texts[c]:
                tok = tokenize([text])
                logp = torch.log_softmax(model.next_token_logits(images[i:i + 1], tok)[0], -1)
                n_words = len(text.split())
                lls.append(sum(logp[j, tok[0, j + 1]].item() for j in range(n_words)))
            assert scores[i, c].item() == pytest.approx(sum(lls) / len(lls), abs=1e-4)


@pytest.mark.parametrize("module", ["ours", "captioner", "open_clip"])
def test_tiny_end_to_end_train_learns_and_round_trips(module, tmp_path):
    torch.manual_seed(0)
    cfg = Config(**TINY, steps=60)
    mod = {"ours": None, "captioner": captioner, "open_clip": open_clip_baseline}[module]
    logged = []

    class Run(QuietRun):
        def log(self, step, **values):
            logged.append(values["loss"])

    model = (mod.train if mod else train)(cfg, Run())
    assert isinstance(model, ZeroShotClassifier)
    assert logged[-1] < logged[0] * 0.8  # the objective went down
    result = REGISTRY["zero_shot"](model, cfg, ZeroShotOptions(n=20, batch_size=10))
    assert derived_metrics(result) == pytest.approx(result.metrics)
    assert set(result.metrics) == {"zero_shot_single", "zero_shot_ensemble"}
    model.save(tmp_path / "m.safetensors")
    again = (mod.build if mod else CLIP)(cfg).load(tmp_path / "m.safetensors")
    x = make_captioned_shapes(4, 16, split="zero_shot").images
    texts = prompts(HELD_OUT, TEMPLATES)
    assert torch.allclose(model.zero_shot_logits(x, texts), again.zero_shot_logits(x, texts))


def test_hidden_states_match_the_gpt_forward():
    model = CLIP(Config(**TINY)).eval()
    t = tokenize(["one small red circle", "two large blue crosses"])
    logits, _ = model.text(t)
    assert torch.allclose(model.text.lm_head(hidden_states(model.text, t)), logits, atol=1e-6)


def test_full_tier_loads_released_style_weights_and_matches_open_clips_zero_shot_classifier(tmp_path):
    from open_clip.zero_shot_classifier import build_zero_shot_classifier
    from safetensors.torch import load_file

    from reproductions.clip import pretrained
    from reproductions.clip.stand_ins import write_tiny_clip

    config_path, weights = write_tiny_clip(tmp_path, image_size=64)
    cfg = pretrained.Config(model=str(config_path), checkpoint=str(weights), data_root=str(tmp_path / "none"),
                            image_size=64)
    assert pretrained.required_data(cfg) and not any("CLIP weights" in m for m in pretrained.required_data(cfg))
    model = pretrained.train(cfg, QuietRun())
    saved = load_file(str(weights))
    assert all(torch.equal(v, saved[k]) for k, v in model.model.state_dict().items())
    names, templates = ["goldfish", "tabby cat", "school bus"], ["a photo of a {}.", "a sketch of a {}.", "itap of a {}."]
    texts = [[t.format(c) for t in templates] for c in names]
    ref = build_zero_shot_classifier(model.model, model.tokenizer, names, [lambda c, t=t: t.format(c) for t in templates],
                                     num_classes_per_batch=2)
    assert torch.allclose(model.class_weights(texts), ref.T, atol=1e-5)
    images = torch.rand(2, 3, 64, 64)
    logits = model.zero_shot_logits(images, texts)
    assert torch.equal(logits, model.zero_shot_logits(images, texts))  # the cached classifier
    with pytest.raises(FileNotFoundError):
        pretrained.train(pretrained.Config(model=str(config_path), checkpoint=str(tmp_path / "absent.safetensors")),
                         QuietRun())
