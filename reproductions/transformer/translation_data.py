"""A generated translation task between two made-up languages, with word-order changes and
agreement, so that a translator must know where each source word stands.

Source ("Aru", English-like, uninflected): subject - verb - object - [with-phrase] - [adverb];
a noun phrase is a determiner, adjectives, then the noun; plural nouns take `-s`; verbs do not
inflect. Every role is marked by position alone.

Target ("Belo"): subject - object - [with-phrase] - [adverb] - verb (verb-final); a noun phrase is
the noun, its adjectives in mirrored order, then a determiner that agrees with the noun's gender
and number and carries the phrase's case (nominative, accusative, instrumental); adjectives agree
with the noun's gender and number; the verb agrees with the subject's gender and number.

The sentence space is far larger than any training run samples (about 10^13 sentences), and the
held-out sentences come from their own random stream.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

NOUNS = {  # source stem -> (target stem, gender)
    "tavo": ("mirek", "m"), "pelu": ("sanot", "f"), "goran": ("vultek", "m"), "misa": ("heli", "f"),
    "dobak": ("tarum", "m"), "fenu": ("lisa", "f"), "karol": ("bodun", "m"), "nimo": ("reva", "f"),
    "sutak": ("pamir", "m"), "lapi": ("oska", "f"), "rumo": ("gelat", "m"), "vesa": ("kiri", "f"),
    "hobin": ("zandor", "m"), "tila": ("mena", "f"), "gasp": ("drovin", "m"), "pomi": ("faya", "f"),
    "kelt": ("surom", "m"), "dari": ("nelka", "f"), "brun": ("hatek", "m"), "sova": ("liba", "f"),
}
ADJECTIVES = {
    "blin": "ragh", "tosk": "mel", "vari": "kund", "pash": "ter", "ulo": "sev", "gret": "dol",
    "mift": "abr", "sare": "pin", "koda": "wul", "lemt": "yor", "fosi": "gam", "drel": "tuv",
}
VERBS = {
    "mon": "sabi", "rika": "tolu", "fesh": "gari", "palo": "vemi", "ukat": "doru", "sint": "keli",
    "gorm": "nafi", "lesi": "pomu", "brat": "zeki", "teko": "hulo", "vand": "rasi", "kipo": "mebu",
}
ADVERBS = {"yesta": "ombra", "kolin": "festu", "parvo": "ilki", "sudem": "warto", "nabi": "gelum"}
SOURCE_DETERMINERS = {"definite": "ka", "indefinite": "mi"}
WITH = "pon"
# Target determiner by (definiteness, gender, number, case).
DETERMINERS = {
    (d, g, n, c): f"{'l' if d == 'definite' else 'n'}{'o' if g == 'm' else 'e'}{'' if n == 'sg' else 'r'}{suffix}"
    for d in ("definite", "indefinite") for g in ("m", "f") for n in ("sg", "pl")
    for c, suffix in (("nom", "s"), ("acc", "m"), ("ins", "k"))
}
ADJECTIVE_ENDINGS = {("m", "sg"): "o", ("f", "sg"): "a", ("m", "pl"): "oi", ("f", "pl"): "ae"}
VERB_ENDINGS = {("m", "sg"): "t", ("f", "sg"): "ta", ("m", "pl"): "n", ("f", "pl"): "na"}


@dataclass(frozen=True)
class NounPhrase:
    noun: str
    number: str
    definiteness: str
    adjectives: tuple[str, ...]

    @property
    def gender(self) -> str:
        return NOUNS[self.noun][1]

    def source(self) -> list[str]:
        noun = self.noun + ("s" if self.number == "pl" else "")
        return [SOURCE_DETERMINERS[self.definiteness], *self.adjectives, noun]

    def target(self, case: str) -> list[str]:
        stem, gender = NOUNS[self.noun]
        noun = stem + ("i" if self.number == "pl" else "")
        ending = ADJECTIVE_ENDINGS[(gender, self.number)]
        adjectives = [ADJECTIVES[a] + ending for a in reversed(self.adjectives)]
        return [noun, *adjectives, DETERMINERS[(self.definiteness, gender, self.number, case)]]


def _noun_phrase(rng: random.Random) -> NounPhrase:
    n_adj = rng.choice((0, 1, 1, 2))
    return NounPhrase(rng.choice(sorted(NOUNS)), rng.choice(("sg", "pl")), rng.choice(("definite", "indefinite")),
                      tuple(rng.sample(sorted(ADJECTIVES), n_adj)))


def sentence_pair(rng: random.Random) -> tuple[str, str]:
    subject, obj = _noun_phrase(rng), _noun_phrase(rng)
    instrument = _noun_phrase(rng) if rng.random() < 0.5 else None
    adverb = rng.choice(sorted(ADVERBS)) if rng.random() < 0.4 else None
    verb = rng.choice(sorted(VERBS))

    src = subject.source() + [verb] + obj.source()
    tgt = subject.target("nom") + obj.target("acc")
    if instrument is not None:
        src += [WITH] + instrument.source()
        tgt += instrument.target("ins")
    if adverb is not None:
        src.append(adverb)
        tgt.append(ADVERBS[adverb])
    tgt.append(VERBS[verb] + VERB_ENDINGS[(subject.gender, subject.number)])
    return " ".join(src), " ".join(tgt)


def pairs(seed: int, n: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [sentence_pair(rng) for _ in range(n)]


TEST_SEED = 1_000_003  # the held-out stream; training streams are seeded by the run's seed (< 10^6)


def test_pairs(n: int) -> list[tuple[str, str]]:
    return pairs(TEST_SEED, n)


def vocabulary() -> list[str]:
    """Every word either language can produce (shared vocabulary, as the paper's §3.4)."""
    words = set(SOURCE_DETERMINERS.values()) | {WITH} | set(DETERMINERS.values())
    for stem, (tstem, _) in NOUNS.items():
        words |= {stem, stem + "s", tstem, tstem + "i"}
    words |= set(ADJECTIVES) | {a + e for a in ADJECTIVES.values() for e in ADJECTIVE_ENDINGS.values()}
    words |= set(VERBS) | {v + e for v in VERBS.values() for e in VERB_ENDINGS.values()}
    words |= set(ADVERBS) | set(ADVERBS.values())
    return sorted(words)


def fingerprint() -> str:
    """A hash of the grammar's output on the test stream (changes if the generator changes)."""
    h = hashlib.sha256("\n".join(f"{s}\t{t}" for s, t in test_pairs(200)).encode())
    return f"generated Aru->Belo translation sha256:{h.hexdigest()[:16]}"
