"""ScienceQA (Lu et al., 2022) and LLaVA's stage-1 captions (CC-595K) from local data roots, for
LLaVA's full tier (arXiv 2304.08485, Section 5.2).

ScienceQA, as its authors release it (github.com/lupantech/ScienceQA, `data/scienceqa`):

    <root>/problems.json      {pid: {question, choices, answer (index), hint, image (name or null), split,
                                      lecture, solution, subject, grade, ...}}
    <root>/pid_splits.json    {"train": [pid, ...], "val": [...], "test": [...]}
    <root>/images/<split>/<pid>/image.png   for the questions with an image context

The prompt is the paper's question-context-options input, and the target its reasoning-first
output ("the model predicts the reasoning first, then the answer"): the solution, then
"The answer is X." (LLaVA's `QCM-LEA` conversion without the lecture).

LLaVA-CC3M-Pretrain-595K (Hugging Face `liuhaotian/LLaVA-CC3M-Pretrain-595K`), stage 1's pairs:

    <root>/chat.json          [{"id", "image": "<file>", "conversations": [{"from": "human", "value":
                                 "<image>\\n<instruction>" or "<instruction>\\n<image>"}, {"from": "gpt", "value": caption}]}]
    <root>/images/<file>

Images are read as RGB, resized so the short side is `size` (bicubic) and centre-cropped, in [0, 1].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IMAGE = "<image>"
LETTERS = "ABCDEFGHIJ"


@dataclass
class Example:
    id: str
    image: Path | None      # None: a question without an image context
    prompt: str             # with IMAGE where the image goes
    target: str             # the answer text the model is trained to produce
    answer: str = ""        # ScienceQA: the correct option's letter


def missing_scienceqa(root: str | Path) -> list[str]:
    base = Path(root)
    return [f"ScienceQA: no file {base / f} (the root {base} needs the authors' problems.json, pid_splits.json "
            f"and images/<split>/<pid>/image.png)" for f in ("problems.json", "pid_splits.json") if not (base / f).is_file()]


def missing_cc595k(root: str | Path) -> list[str]:
    base = Path(root)
    out = [] if (base / "chat.json").is_file() else [f"LLaVA-CC3M-Pretrain-595K: no file {base / 'chat.json'}"]
    return out + ([] if (base / "images").is_dir() else [f"LLaVA-CC3M-Pretrain-595K: no folder {base / 'images'}"])


def question_prompt(p: dict) -> str:
    options = " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(p["choices"]))
    context = p.get("hint") or "N/A"
    return f"Context: {context}\nQuestion: {p['question']}\nOptions: {options}"


def load_scienceqa(root: str | Path, split: str, n: int = 0) -> list[Example]:
    """The split's questions in the authors' order (the first `n`; 0: all)."""
    missing = missing_scienceqa(root)
    if missing:
        raise FileNotFoundError("; ".join(missing))
    base = Path(root)
    problems = json.loads((base / "problems.json").read_text())
    pids = json.loads((base / "pid_splits.json").read_text())[split]
    out = []
    for pid in pids[:n or None]:
        p = problems[pid]
        image = base / "images" / split / pid / p["image"] if p.get("image") else None
        letter = LETTERS[p["answer"]]
        prompt = question_prompt(p)
        prompt = f"{IMAGE}\n{prompt}" if image is not None else prompt
        solution = (p.get("solution") or "").strip()
        out.append(Example(pid, image, prompt, f"{solution} The answer is {letter}.".strip(), letter))
    return out


def load_cc595k(root: str | Path, n: int = 0) -> list[Example]:
    missing = missing_cc595k(root)
    if missing:
        raise FileNotFoundError("; ".join(missing))
    base = Path(root)
    out = []
    for item in json.loads((base / "chat.json").read_text())[:n or None]:
        human, gpt = item["conversations"][0]["value"], item["conversations"][1]["value"]
        out.append(Example(str(item["id"]), base / "images" / item["image"], human.strip(), gpt.strip()))
    return out


def read_image(path: Path | None, size: int) -> torch.Tensor:
    """3 x size x size in [0, 1]: short side resized to `size` (bicubic), centre crop; zeros for None."""
    if path is None:
        return torch.zeros(3, size, size)
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def answer_letter(text: str) -> str | None:
    """The letter of the last 'The answer is X' in a completion (LLaVA's ScienceQA evaluation)."""
    key = "The answer is "
    at = text.rfind(key)
    if at < 0:
        return None
    rest = text[at + len(key):].strip().lstrip("(")
    return rest[0] if rest and rest[0] in LETTERS else None


def write_scienceqa(folder: Path, n_per_split: int = 3) -> Path:
    """A tiny ScienceQA tree in the authors' layout (random images), for dry runs and tests."""
    from PIL import Image

    rng = np.random.default_rng(0)
    problems, splits = {}, {}
    for split in ("train", "val", "test"):
        splits[split] = []
        for i in range(n_per_split):
            pid = f"{split}{i}"
            has_image = i % 2 == 0
            problems[pid] = {"question": "Which of these is a mammal?", "choices": ["cat", "trout", "frog"][: 2 + i % 2],
                             "answer": i % 2, "hint": "", "image": "image.png" if has_image else None, "split": split,
                             "lecture": "Mammals have fur.", "solution": "A cat has fur."}
            if has_image:
                (folder / "images" / split / pid).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / "images" / split / pid / "image.png")
            splits[split].append(pid)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "problems.json").write_text(json.dumps(problems))
    (folder / "pid_splits.json").write_text(json.dumps(splits))
    return folder


def write_cc595k(folder: Path, n: int = 4) -> Path:
    """A tiny LLaVA-CC3M-Pretrain-595K tree (random images, template captions)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        name = f"GCC_train_{i:09d}.jpg"
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(folder / "images" / name)
        items.append({"id": f"GCC_train_{i:09d}", "image": name, "conversations": [
            {"from": "human", "value": "Describe the image concisely.\n<image>"},
            {"from": "gpt", "value": f"a photo of object {i}"}]})
    (folder / "chat.json").write_text(json.dumps(items))
    return folder
