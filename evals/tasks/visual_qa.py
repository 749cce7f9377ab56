"""Visual question answering on generated scenes: images, captions and multi-turn conversations
(LLaVA, arXiv 2304.08485), drawn like CLIP's captioned shapes so that CLIP's image encoder sees
the kind of pictures it was trained on.

A scene holds one to three objects on a dark background, each a (colour, shape) of
`evals.tasks.captioned_shapes` (5 colours x 5 shapes, the same colours, shapes, radii and 3x3 grid
cells with jitter), all of one size; within a scene no two objects share a colour or a shape, so
"the red one" and "the circle" each name one object. Its description (the stage-1 caption, and
what the oracle reads in place of the image) names every object and its cell in reading order:

    "a red circle at the top left , a blue square in the center"

A conversation (the paper's Table 2, eq. 2) has `TURNS` question-answer turns about one scene,
each of a different question type, drawn with the scene:

    count     "how many shapes are there ?"                        -> "two"
    colour    "what colour is the square ?"                        -> "blue"
    shape     "what shape is the red one ?"                        -> "circle"
    where     "where is the blue square ?"                         -> "in the center"
    relative  "is the red circle left of the blue square ?"        -> "yes"  (left of, right of, above, below)
    exists    "is there a green circle ?"                          -> "no"   (half absent: a colour or shape of the scene in a new pairing)

`relative` asks only about two objects in different columns (left/right) or rows (above/below),
the relation drawn at random so yes and no are about equally likely. Question type `shape` is
held out of the instruction-tuning split (`TRAIN_TYPES`); the test split asks every type.

Text is tokenised by words over `VOCAB`. A conversation's tokens, with the image's place marked by
`<image>` (before or after the first question, drawn per conversation as in eq. 2):

    <bos> human : <image> q1 <stop> assistant : a1 <stop> human : q2 <stop> assistant : a2 <stop> ...

`answer_mask` marks the tokens the model is trained and scored on: each answer's words and the
`<stop>` that ends it (the paper's green tokens). Splits draw from disjoint seed streams: `train`
(captions and conversations for training) and `text` (text-only documents for pre-training a language model, every question type) and `test`
(held-out images, every question type).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from evals.tasks.captioned_shapes import COLOURS, COUNTS, RADIUS, SHAPES, SIZES
from evals.tasks.images import COLOURS as RGB
from evals.tasks.images import _position_words, _shape_masks, dataset_fingerprint

QUESTION_TYPES = ("count", "colour", "shape", "where", "relative", "exists")
HELD_OUT_TYPES = ("shape",)
TRAIN_TYPES = tuple(t for t in QUESTION_TYPES if t not in HELD_OUT_TYPES)
TURNS = 3
SEEDS = {"train": 0, "text": 10_000, "test": 20_000}
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}  # (axis, sign)

PAD, BOS, STOP, IMAGE = "<pad>", "<bos>", "<stop>", "<image>"
_WORDS = ("human", "assistant", ":", "how", "many", "shapes", "are", "there", "?", "what", "colour", "is", "the",
          "shape", "one", "where", "left", "right", "of", "above", "below", "yes", "no", "a", "describe", "image",
          "briefly", ",", "in", "at", "on", "top", "middle", "bottom", "center")
VOCAB = (PAD, BOS, STOP, IMAGE, *dict.fromkeys(_WORDS + COUNTS + COLOURS + SHAPES))
WORD_ID = {w: i for i, w in enumerate(VOCAB)}
CAPTION_PROMPT = "describe the image briefly"  # stage 1's instruction (the paper samples one of several)


@dataclass
class Scene:
    objects: list[tuple[int, int, int]]   # (colour index, shape index, cell 0..8 row-major), in reading order

    def phrase(self, k: int) -> str:
        c, s, _ = self.objects[k]
        return f"{COLOURS[c]} {SHAPES[s]}"

    def position(self, k: int) -> str:
        cell = self.objects[k][2]
        return _position_words((cell % 3 + 0.5) / 3, (cell // 3 + 0.5) / 3)

    def description(self) -> str:
        return " , ".join(f"a {self.phrase(k)} {self.position(k)}" for k in range(len(self.objects)))


@dataclass
class VisualQA:
    images: torch.Tensor            # float32 N x 3 x H x W in [0, 1]
    scenes: list[Scene]
    conversations: list[list[tuple[str, str, str]]]  # per image: (question type, question, answer) per turn
    image_first: list[bool]         # eq. (2): the image before (True) or after the first question

    def __len__(self) -> int:
        return len(self.scenes)

    def fingerprint(self) -> str:
        return dataset_fingerprint(self.images)

    def descriptions(self) -> list[str]:
        return [s.description() for s in self.scenes]


def _question(kind: str, scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    """One question of `kind` about `scene` and its answer, or None where the scene has none."""
    objs, n = scene.objects, len(scene.objects)
    k = int(rng.integers(n))
    if kind == "count":
        return "how many shapes are there ?", COUNTS[n - 1]
    if kind == "colour":
        return f"what colour is the {SHAPES[objs[k][1]]} ?", COLOURS[objs[k][0]]
    if kind == "shape":
        return f"what shape is the {COLOURS[objs[k][0]]} one ?", SHAPES[objs[k][1]]
    if kind == "where":
        return f"where is the {scene.phrase(k)} ?", scene.position(k)
    if kind == "relative":
        pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
        rng.shuffle(pairs)
        for a, b in pairs:
            xy = [(objs[i][2] % 3, objs[i][2] // 3) for i in (a, b)]
            axes = [ax for ax in (0, 1) if xy[0][ax] != xy[1][ax]]
            if not axes:
                continue
            axis = axes[int(rng.integers(len(axes)))]
            names = [r for r, (ax, _) in RELATIONS.items() if ax == axis]
            rel = names[int(rng.integers(2))]
            sign = RELATIONS[rel][1]
            truth = (xy[0][axis] - xy[1][axis]) * sign > 0
            return f"is the {scene.phrase(a)} {rel} the {scene.phrase(b)} ?", "yes" if truth else "no"
        return None
    if kind == "exists":
        present = {(c, s) for c, s, _ in objs}
        if rng.random() < 0.5:
            c, s = objs[k][:2]
        else:  # absent, but sharing the colour or the shape of an object in the scene
            c, s = objs[k][:2]
            if rng.random() < 0.5:
                c = int(rng.choice([x for x in range(len(COLOURS)) if (x, s) not in present]))
            else:
                s = int(rng.choice([x for x in range(len(SHAPES)) if (c, x) not in present]))
        return f"is there a {COLOURS[c]} {SHAPES[s]} ?", "yes" if (c, s) in present else "no"
    raise ValueError(f"visual_qa: unknown question type {kind!r} (known: {', '.join(QUESTION_TYPES)})")


def make_visual_qa(n: int, size: int = 32, split: str = "train", seed: int | None = None,
                   types: tuple[str, ...] | None = None, turns: int = TURNS) -> VisualQA:
    """`n` scenes with their images and a conversation of `turns` turns each, types drawn without
    repetition from `types` (default: `TRAIN_TYPES` for 'train', every type for 'test'), from a
    numpy Generator seeded by `seed` (default: the split's stream). The generator is read scene by
    scene, so the first k scenes are the same whatever `n` (prefix-stable): a small draw (the paper
    page's example images) shows the scenes a large one (the evaluator's) begins with."""
    if split not in SEEDS:
        raise ValueError(f"make_visual_qa: split {split!r} is not one of {tuple(SEEDS)}")
    if n < 0 or size < 12:
        raise ValueError(f"make_visual_qa: need n >= 0 and size >= 12, got n={n}, size={size}")
    types = tuple(types) if types is not None else (TRAIN_TYPES if split == "train" else QUESTION_TYPES)  # text: every type
    if turns > len(types):
        raise ValueError(f"make_visual_qa: {turns} turns need as many question types, got {types}")
    rng = np.random.default_rng(SEEDS[split] if seed is None else seed)
    # scene by scene, its layout then its conversation, so that scene i is the same whatever n
    counts = np.empty(n, dtype=np.int64)
    colours, shapes, cells = (np.empty((n, 3), dtype=np.int64) for _ in range(3))
    radius, bg_level, jitter = np.empty(n), np.empty(n), np.empty((n, 3, 2))
    image_first = np.empty(n, dtype=bool)
    scenes, conversations = [], []
    for i in range(n):
        counts[i] = rng.integers(1, len(COUNTS) + 1)
        colours[i] = rng.permutation(len(COLOURS))[:3]
        shapes[i] = rng.permutation(len(SHAPES))[:3]
        cells[i] = rng.permutation(9)[:3]
        radius[i] = RADIUS[SIZES[int(rng.integers(len(SIZES)))]] * rng.uniform(0.9, 1.1)
        jitter[i] = rng.uniform(-0.06, 0.06, size=(3, 2))
        bg_level[i] = rng.uniform(0.0, 0.15)
        image_first[i] = rng.random() < 0.5
        objs = sorted((int(colours[i, j]), int(shapes[i, j]), int(cells[i, j])) for j in range(counts[i]))
        scene = Scene(sorted(objs, key=lambda o: o[2]))
        turns_of: list[tuple[str, str, str]] = []
        for kind in rng.permutation(np.array(types)):
            if len(turns_of) == turns:
                break
            qa = _question(str(kind), scene, rng)
            if qa is not None:
                turns_of.append((str(kind), *qa))
        if len(turns_of) < turns:
            raise ValueError(f"make_visual_qa: scene {i} has fewer than {turns} askable types among {types}")
        scenes.append(scene)
        conversations.append(turns_of)
    # drawing: as captioned_shapes, one colour per object
    cx = (cells % 3 + 0.5) / 3 + jitter[..., 0]
    cy = (cells // 3 + 0.5) / 3 + jitter[..., 1]
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    r = torch.from_numpy(radius.astype(np.float32))[:, None, None]
    rgb = torch.tensor([RGB[c] for c in COLOURS], dtype=torch.float32)
    images = torch.from_numpy(bg_level.astype(np.float32))[:, None, None, None].expand(n, 3, size, size).clone()
    for j in range(3):
        active = torch.from_numpy(counts > j)
        dx = (coords[None, None, :] - torch.from_numpy(cx[:, j].astype(np.float32))[:, None, None]) / r
        dy = (coords[None, :, None] - torch.from_numpy(cy[:, j].astype(np.float32))[:, None, None]) / r
        mask = torch.zeros(n, size, size, dtype=torch.bool)
        for s, kind in enumerate(SHAPES):
            sel = active & torch.from_numpy(shapes[:, j] == s)
            if sel.any():
                mask[sel] = _shape_masks(kind, dx[sel], dy[sel])
        colour = rgb[torch.from_numpy(colours[:, j])]
        images = torch.where(mask[:, None], colour[:, :, None, None], images)

    return VisualQA(images.contiguous(), scenes, conversations, [bool(x) for x in image_first])


# -- tokens ------------------------------------------------------------------------------------
def ids(text: str) -> list[int]:
    words = text.split()
    unknown = [w for w in words if w not in WORD_ID]
    if unknown:
        raise ValueError(f"visual_qa: {unknown} not in the vocabulary")
    return [WORD_ID[w] for w in words]


def conversation_tokens(turns: list[tuple[str, str]], image_first: bool = True) -> tuple[list[int], list[bool]]:
    """Eq. (2)'s sequence for (question, answer) turns with one `<image>` in the first turn, and
    the mask of the answer tokens (each answer's words and its `<stop>`)."""
    tokens, mask = [WORD_ID[BOS]], [False]

    def put(words: list[int], is_answer: bool) -> None:
        tokens.extend(words)
        mask.extend([is_answer] * len(words))

    for t, (question, answer) in enumerate(turns):
        q = ids(question)
        if t == 0:
            q = [WORD_ID[IMAGE], *q] if image_first else [*q, WORD_ID[IMAGE]]
        put(ids("human :") + q + [WORD_ID[STOP]] + ids("assistant :"), False)
        put(ids(answer) + [WORD_ID[STOP]], True)
    return tokens, mask


def pad(rows: list[list[int]], masks: list[list[bool]], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (pad id 0) and answer masks, len(rows) x length (default: the longest)."""
    length = length or max(len(r) for r in rows)
    tokens = torch.zeros(len(rows), length, dtype=torch.int64)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, (r, m) in enumerate(zip(rows, masks)):
        if len(r) > length:
            raise ValueError(f"visual_qa: a sequence of {len(r)} tokens is longer than {length}")
        tokens[i, :len(r)] = torch.tensor(r)
        mask[i, :len(m)] = torch.tensor(m)
    return tokens, mask


def instruction_batch(data: VisualQA, index=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and answer masks of the conversations (stage 2 and the test)."""
    index = range(len(data)) if index is None else index
    out = [conversation_tokens([(q, a) for _, q, a in data.conversations[i]], data.image_first[i]) for i in index]
    return pad([t for t, _ in out], [m for _, m in out])


def caption_batch(data: VisualQA, index=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1's single-turn 'describe the image briefly' -> description, image first."""
    index = range(len(data)) if index is None else index
    out = [conversation_tokens([(CAPTION_PROMPT, data.scenes[i].description())], True) for i in index]
    return pad([t for t, _ in out], [m for _, m in out])


def description_ids(data: VisualQA, index=None) -> list[list[int]]:
    """The scene descriptions as ids (what the oracle reads in place of `<image>`)."""
    index = range(len(data)) if index is None else index
    return [ids(data.scenes[i].description()) for i in index]


def text_documents(data: VisualQA) -> tuple[torch.Tensor, torch.Tensor]:
    """Text-only documents for pre-training a language model: each conversation with its scene's
    description written where the image would be (every token is a training target)."""
    rows = []
    for i in range(len(data)):
        tokens, _ = conversation_tokens([(q, a) for _, q, a in data.conversations[i]], data.image_first[i])
        at = tokens.index(WORD_ID[IMAGE])
        rows.append(tokens[:at] + ids(data.scenes[i].description()) + tokens[at + 1:])
    return pad(rows, [[True] * len(r) for r in rows])


def decode(token_ids) -> str:
    return " ".join(VOCAB[int(t)] for t in token_ids if int(t) != WORD_ID[PAD])
