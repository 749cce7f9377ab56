"""The dry run's stand-in for absent WMT14 (imported by `repro reproduce --dry-run` alone, never by a
run): a `datasets` save_to_disk folder with `train` and `test` splits whose rows hold
`translation: {source_lang: ..., target_lang: ...}`, the layout `load_wmt14` reads, of a few
made-up sentence pairs. Configs of the other datasets and modules come back unchanged."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

PAIRS = [("the house is small .", "das Haus ist klein ."), ("the cat sleeps .", "die Katze schläft ."),
         ("I read a book .", "ich lese ein Buch ."), ("we go home today .", "wir gehen heute nach Hause ."),
         ("the weather is good .", "das Wetter ist gut ."), ("she drinks water .", "sie trinkt Wasser ."),
         ("the train is late .", "der Zug ist spät ."), ("he writes a letter .", "er schreibt einen Brief .")]


def stand_in_data(config: Any, folder: Path) -> Any:
    if getattr(config, "dataset", None) != "wmt14":
        return config
    from datasets import Dataset, DatasetDict

    src, tgt = config.source_lang, config.target_lang
    rows = [{"translation": {src: s, tgt: t}} for s, t in PAIRS]
    root = Path(folder) / "wmt14"
    DatasetDict({"train": Dataset.from_list(rows[:6]), "test": Dataset.from_list(rows[6:])}).save_to_disk(str(root))
    return dataclasses.replace(config, data_dir=str(root))
