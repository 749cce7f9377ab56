"""Zero-shot image-text retrieval (CLIP, arXiv 2103.00020, Table 13).

The paper's Table 13 ranks, for each Flickr30k or MSCOCO test caption, the test images (text to
image) and, for each image, the test captions (image to text), and reports recall@1, @5 and @10:
the share of queries with a right answer among the first k. Protocol here, on generated captioned
shapes (`evals.tasks.captioned_shapes`): the first `n` images of the `zero_shot` split (their
colour-shape classes held out from every training image and caption; the same stream the
`zero_shot` evaluator classifies) with their own captions ("two large red circles", "one small
blue ring at the top left").

- **Identical captions.** The generator's captions repeat (count x size x class x position: at
  most 220 distinct texts), so the text gallery is the distinct captions, each once. Image to
  text: the right answer is the image's own caption, among the distinct captions. Text to image:
  each distinct caption is one query, and every image with exactly that caption is a right answer
  (the text cannot tell them apart); an image of the same class with another count, size or
  position is wrong.
- **Scores.** `zero_shot_logits(images, [[caption] for caption in captions])` (a
  `ZeroShotClassifier`, each caption a one-prompt "class"): CLIP's scaled cosine similarity, a
  captioner's log-likelihood of the caption given the image. Text to image ranks one column of
  that matrix, image to text one row.
- **Ties** count against the query: a query's rank is the number of wrong candidates scoring at
  least as high as its best right one, and it is a hit at k when that rank is below k (a model
  that scores everything alike gets recall 0, not 1).

Metrics: `retrieval_t2i_r1`, `retrieval_t2i_r5`, `retrieval_i2t_r1`, `retrieval_i2t_r5`; each
query's hit (0 or 1) is kept in `samples` (`t2i_hit1`, ..., one per distinct caption or per
image), and `derive` recomputes the recalls from them. The protocol states each recall's chance
level (a random ranking) and, for a few text queries, the captions of the images ranked first.

The picture `retrieval_examples.png` (published beside the record) shows, for `examples` text
queries (the first caption of each held-out class in the stream, in class order), the `shown`
images ranked first, framed green when the image's caption is the query, amber when it is of the
query's colour-shape class but another count, size or position, red otherwise.
"""

from __future__ import annotations

import io
from math import comb

import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import ZeroShotClassifier, capability
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult
from evals.tasks.captioned_shapes import HELD_OUT, class_name, make_captioned_shapes

KS = (1, 5)
DIRECTIONS = ("t2i", "i2t")
PICTURE = "retrieval_examples.png"
GREEN, AMBER, RED = (40, 200, 60), (240, 170, 20), (220, 40, 40)


class RetrievalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(1000, ge=2)           # held-out images, and their captions
    batch_size: int = Field(100, ge=1)   # images scored against every caption at once
    examples: int = Field(6, ge=0, le=len(HELD_OUT))  # text queries drawn in the picture (0: no picture)
    shown: int = Field(5, ge=1, le=10)   # images drawn per query


def recalls(samples: dict[str, list[float]]) -> dict[str, float]:
    """Each recall is the mean of its queries' hits (`<direction>_hit<k>`)."""
    return {f"retrieval_{name.replace('_hit', '_r')}": sum(xs) / len(xs) for name, xs in samples.items()}


def derive(result: EvalResult) -> dict[str, float]:
    return recalls(result.samples)


def tiny(options: RetrievalOptions) -> RetrievalOptions:
    return shrunk(options, n=8, batch_size=8, examples=2)


def ranks(scores: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Per query (row of `scores`, queries x candidates, with `right` its boolean right answers):
    how many wrong candidates score at least as high as the query's best right one."""
    best = scores.masked_fill(~right, float("-inf")).max(1, keepdim=True).values
    return ((scores >= best) & ~right).sum(1)


def chance_t2i(n: int, relevant: list[int], k: int) -> float:
    """Recall@k of a random ranking of n images, averaged over queries with `relevant` right ones."""
    return sum(1 - comb(n - r, k) / comb(n, k) for r in relevant) / len(relevant)


def _picture(data, order: torch.Tensor, queries: list[int], texts: list[str], caption_of: torch.Tensor,
             shown: int, first_right: torch.Tensor) -> bytes:
    """Rows: a text query, then the images it ranks first, framed by how right they are."""
    from PIL import Image, ImageDraw

    scale = max(1, 96 // data.images.shape[-1])
    cell, border, pad, text_w = data.images.shape[-1] * scale, 4, 6, 230
    row_h = cell + 2 * border + pad
    width, height = text_w + shown * (cell + 2 * border + pad) + pad, 30 + len(queries) * row_h + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), f"text -> image: the {shown} images ranked first. Frame: green = captioned so, "
                        "amber = same colour and shape, red = other", fill=(0, 0, 0))
    pixels = (data.images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for row, q in enumerate(queries):
        y = 30 + row * row_h
        draw.text((pad, y + cell // 2 - 8), f'"{texts[q]}"', fill=(0, 0, 0))
        draw.text((pad, y + cell // 2 + 8), f"first right image at rank {int(first_right[q]) + 1}", fill=(90, 90, 90))
        query_class = data.labels[caption_of == q][0]
        for col, i in enumerate(order[q, :shown].tolist()):
            x = text_w + col * (cell + 2 * border + pad)
            colour = GREEN if caption_of[i] == q else AMBER if data.labels[i] == query_class else RED
            draw.rectangle([x, y, x + cell + 2 * border - 1, y + cell + 2 * border - 1], fill=colour)
            canvas.paste(Image.fromarray(pixels[i]).resize((cell, cell), Image.NEAREST), (x + border, y + border))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


@register("retrieval", version=1, options=RetrievalOptions, derive=derive, tiny=tiny,
          metric_names=lambda o: [f"retrieval_{d}_r{k}" for d in DIRECTIONS for k in KS])
def retrieval(agent, config, options: RetrievalOptions) -> Measured:
    model = capability(agent, ZeroShotClassifier, "retrieval")
    data = make_captioned_shapes(options.n, config.image_size, split="zero_shot")
    texts = list(dict.fromkeys(data.captions))                      # distinct captions, first-seen order
    caption_of = torch.tensor([texts.index(c) for c in data.captions])
    prompts = [[t] for t in texts]
    with torch.no_grad():
        scores = torch.cat([model.zero_shot_logits(data.images[i:i + options.batch_size], prompts).float().cpu()
                            for i in range(0, len(data), options.batch_size)])  # images x captions
    if scores.shape != (len(data), len(texts)):
        raise ValueError(f"retrieval: zero_shot_logits gave shape {tuple(scores.shape)}, "
                         f"expected {(len(data), len(texts))}")
    right = caption_of[:, None] == torch.arange(len(texts))[None, :]     # images x captions
    rank = {"i2t": ranks(scores, right), "t2i": ranks(scores.T, right.T)}
    samples = {f"{d}_hit{k}": (rank[d] < k).float().tolist() for d in DIRECTIONS for k in KS}
    relevant = right.sum(0).tolist()
    # the images each caption ranks first (stable order: among equal scores, the earlier image)
    order = torch.sort(scores.T, dim=1, descending=True, stable=True).indices
    queries = [int(caption_of[data.labels == c][0]) for c in range(options.examples)
               if (data.labels == c).any()]
    examples = [f'"{texts[q]}" -> ' + ", ".join(f"{data.captions[i]}{' (right)' if caption_of[i] == q else ''}"
                                                for i in order[q, :options.shown].tolist()) for q in queries]
    protocol = {
        "dataset": "captioned_shapes", "split": "zero_shot", "n_images": len(data), "n_captions": len(texts),
        "resolution": config.image_size, "classes": [class_name(k) for k in HELD_OUT],
        "data_fingerprint": data.fingerprint(),
        "scores": "zero_shot_logits(images, [[caption] for caption in distinct captions])",
        "right_answers": "image to text: the image's own caption among the distinct captions; text to image: "
                         "every image with exactly that caption",
        "ties": "counted against the query (rank = wrong candidates scoring at least the best right one)",
        "chance": {**{f"retrieval_i2t_r{k}": min(k, len(texts)) / len(texts) for k in KS},
                   **{f"retrieval_t2i_r{k}": chance_t2i(len(data), relevant, min(k, len(data))) for k in KS}},
        "examples": examples,
    }
    images = {PICTURE: _picture(data, order, queries, texts, caption_of, options.shown, rank["t2i"])} if queries else {}
    return Measured(metrics=recalls(samples), samples=samples, protocol=protocol, images=images)
