"""Scorers for the labs: tone (warm or curt), fact correctness and repetition.

``tone_score(text)``
    A number in [0, 1]: how warm and polite an answer sounds. It is a tiny
    naive-Bayes classifier over character n-grams (pieces of 2 or 3
    characters such as "셨죠" or "그냥"), fitted on the TRAIN preference pairs
    only: chosen answers are "warm", rejected answers are "curt".

    * Each piece gets a weight: ``ln(share of warm answers containing it /
      share of curt answers containing it)`` (add-one smoothing). "셨죠" is
      common in warm answers, so its weight is large and positive; "그냥" is
      negative. A piece found equally often in both (the facts themselves: a
      pair's two answers state the same fact) gets weight 0.
    * The evidence of a text is the sum of the weights of the pieces it
      contains (each piece once), and the score is ``sigmoid(scale *
      evidence + bias)``, with ``scale`` and ``bias`` fitted on the same
      training answers (logistic regression with one input).

    ``explain_tone(text)`` lists the pieces and their weights, so a student can
    see why a text scored high or low. The model ships in ``tone_model.json``
    next to this file; refit it with::

        python -m ftlab.eval fit-tone        # reads data/preference/pairs_train.jsonl

    The held-out accuracy on ``pairs_test`` (whose warm/curt phrases never
    appear in training) is in data/README.md and checked by the tests.

``fact_correct(answer, fact_id)``
    True when the fact's key answer (or an alias) appears in the answer,
    after removing spaces and punctuation and lower-casing.

``repetition_rate(text)``
    The share of word 3-grams that repeat an earlier one: catches degenerate
    outputs such as "걱정되셨죠? 걱정되셨죠? 걱정되셨죠?".
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

TONE_MODEL_PATH = Path(__file__).with_name("tone_model.json")

# Fitting settings (recorded in tone_model.json as well).
NGRAM_SIZES = (2, 3)  # character n-gram lengths used as features
MIN_DOC_FREQ = 2  # keep an n-gram only if at least this many training answers contain it
SMOOTHING = 1.0  # add-one (Laplace) smoothing of the warm/curt shares
CALIBRATION_L2 = 1.0  # ridge penalty on (scale, bias): keeps the sigmoid from becoming a step
MIN_ABS_WEIGHT = 0.01  # weights smaller than this (the shared facts: exactly 0) are not shipped


# ---------------------------------------------------------------------------
# Tone
# ---------------------------------------------------------------------------


def tone_features(text: str) -> list[str]:
    """The distinct character n-grams of the text (spaces normalised), in first-seen order."""
    text = " ".join(unicodedata.normalize("NFC", text).split())
    seen: dict[str, None] = {}
    for n in NGRAM_SIZES:
        for i in range(len(text) - n + 1):
            seen.setdefault(text[i:i + n], None)
    return list(seen)


@dataclass(frozen=True)
class ToneModel:
    """Weights of the n-grams, plus the sigmoid's scale and bias."""

    weights: dict
    scale: float
    bias: float

    def evidence(self, text: str) -> float:
        """Sum of the weights of the n-grams present (each counted once)."""
        return sum(self.weights.get(f, 0.0) for f in tone_features(text))

    def score(self, text: str) -> float:
        return _sigmoid(self.scale * self.evidence(text) + self.bias)

    def to_json(self) -> dict:
        return {"scale": self.scale, "bias": self.bias, "weights": dict(sorted(self.weights.items()))}


@lru_cache(maxsize=4)
def _load_model(path: str) -> ToneModel:
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)
    return ToneModel({k: float(v) for k, v in raw["weights"].items()}, float(raw["scale"]), float(raw["bias"]))


def load_tone_model(path: str | Path | None = None) -> ToneModel:
    """The shipped tone model (or the one saved at ``path``)."""
    return _load_model(str(path or TONE_MODEL_PATH))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


def tone_score(text: str, model: ToneModel | None = None) -> float:
    """How warm the text sounds, from 0 (curt/cold) to 1 (warm, empathetic).

    A repeated phrase counts once, so repeating "걱정되셨죠?" does not raise
    the score (``repetition_rate`` is the check for such loops).
    """
    return (model or load_tone_model()).score(text)


def explain_tone(text: str, top: int | None = 10, model: ToneModel | None = None) -> list[tuple[str, float]]:
    """The n-grams of ``text`` that moved its tone score most: ``[(n-gram, weight), ...]``.

    Positive weights pull towards warm, negative towards curt; sorted by the
    size of the effect. ``tone_score = sigmoid(scale * sum(all weights) + bias)``
    with ``scale`` and ``bias`` from ``load_tone_model()``.
    """
    weights = (model or load_tone_model()).weights
    found = [(f, weights[f]) for f in tone_features(text) if f in weights]
    found.sort(key=lambda fw: (-abs(fw[1]), fw[0]))
    return found if top is None else found[:top]


def fit_tone_model(texts: Sequence[str], labels: Sequence[int]) -> ToneModel:
    """Fit the tone scorer on texts labelled 1 (warm) or 0 (curt). Pure Python, deterministic.

    1. For every n-gram in at least MIN_DOC_FREQ texts: weight = ln((warm texts
       with it + 1) / (warm texts + 2)) - ln((curt texts with it + 1) / (curt texts + 2)).
    2. Fit ``sigmoid(scale * evidence + bias)`` to the labels by Newton's method
       (logistic regression with one input, ridge penalty CALIBRATION_L2).
    """
    docs = [tone_features(t) for t in texts]
    n_warm = sum(1 for y in labels if y == 1)
    n_curt = len(labels) - n_warm
    in_warm: dict[str, int] = {}
    in_curt: dict[str, int] = {}
    for feats, y in zip(docs, labels):
        counts = in_warm if y == 1 else in_curt
        for f in feats:
            counts[f] = counts.get(f, 0) + 1
    weights = {}
    for f in sorted(set(in_warm) | set(in_curt)):
        w, c = in_warm.get(f, 0), in_curt.get(f, 0)
        if w + c < MIN_DOC_FREQ:
            continue
        weight = math.log((w + SMOOTHING) / (n_warm + 2 * SMOOTHING)) - math.log((c + SMOOTHING) / (n_curt + 2 * SMOOTHING))
        if abs(weight) >= MIN_ABS_WEIGHT:
            weights[f] = round(weight, 4)
    evidence = [sum(weights.get(f, 0.0) for f in feats) for feats in docs]
    scale, bias = _fit_sigmoid(evidence, labels)
    return ToneModel(weights, round(scale, 6), round(bias, 6))


def _fit_sigmoid(x: Sequence[float], y: Sequence[int], steps: int = 50) -> tuple[float, float]:
    """(a, b) minimising sum(log loss of sigmoid(a*x + b)) + L2/2 (a^2 + b^2), by Newton's method."""
    a = b = 0.0
    for _ in range(steps):
        ga, gb, haa, hab, hbb = CALIBRATION_L2 * a, CALIBRATION_L2 * b, CALIBRATION_L2, 0.0, CALIBRATION_L2
        for xi, yi in zip(x, y):
            p = _sigmoid(a * xi + b)
            ga, gb = ga + (p - yi) * xi, gb + (p - yi)
            w = p * (1 - p)
            haa, hab, hbb = haa + w * xi * xi, hab + w * xi, hbb + w
        det = haa * hbb - hab * hab
        a, b = a - (hbb * ga - hab * gb) / det, b - (haa * gb - hab * ga) / det
    return a, b


def tone_training_data(pairs: Iterable[dict]) -> tuple[list[str], list[int]]:
    """Texts and labels from preference pairs: every chosen is 1, every rejected is 0."""
    texts, labels = [], []
    for pair in pairs:
        texts += [pair["chosen"], pair["rejected"]]
        labels += [1, 0]
    return texts, labels


def pairwise_tone_accuracy(pairs: Iterable[dict], model: ToneModel | None = None) -> float:
    """Share of pairs where tone_score(chosen) > tone_score(rejected)."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no pairs to score")
    wins = sum(tone_score(p["chosen"], model) > tone_score(p["rejected"], model) for p in pairs)
    return wins / len(pairs)


# ---------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------

_STRIP = re.compile(r"[\s\W_]+", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lower-case, NFC, and drop spaces and punctuation ("Caps Lock 키!" -> "capslock키")."""
    return _STRIP.sub("", unicodedata.normalize("NFC", text).lower())


def key_correct(answer: str, key: str, aliases: Iterable[str] = ()) -> bool:
    """True when the key or any alias appears in the answer (after normalize_answer)."""
    text = normalize_answer(answer)
    return any(normalize_answer(k) in text for k in (key, *aliases) if normalize_answer(k))


@lru_cache(maxsize=1)
def _facts() -> dict:
    from ftlab.data import load_facts

    return load_facts()


def fact_correct(answer: str, fact_id: str) -> bool:
    """Does ``answer`` contain the key answer of knowledge-base fact ``fact_id``?"""
    facts = _facts()
    if fact_id not in facts:
        raise KeyError(f"unknown fact id {fact_id!r}: ids look like 'F001' (see data/domain/facts.jsonl)")
    fact = facts[fact_id]
    return key_correct(answer, fact["key"], fact.get("key_aliases", ()))


def fact_accuracy(answers: Sequence[str], fact_ids: Sequence[str]) -> float:
    """Share of answers for which ``fact_correct`` holds."""
    if len(answers) != len(fact_ids):
        raise ValueError(f"{len(answers)} answers but {len(fact_ids)} fact ids")
    if not answers:
        raise ValueError("no answers to score")
    return sum(fact_correct(a, f) for a, f in zip(answers, fact_ids)) / len(answers)


# ---------------------------------------------------------------------------
# Repetition
# ---------------------------------------------------------------------------


def repetition_rate(text: str, n: int = 3) -> float:
    """Share of word n-grams (default 3) that repeat an earlier n-gram in the same text.

    0.0 for text without repeats; close to 1.0 for a loop. Texts too short for
    two n-grams fall back to shorter n-grams (down to single words), so
    "걱정되셨죠? 걱정되셨죠?" scores 0.5.
    """
    words = text.split()
    if len(words) < 2:
        return 0.0
    n = min(n, len(words) - 1)
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams)


def tone_model_json(model: ToneModel) -> str:
    """The file format of tone_model.json (one weight per line, so diffs stay readable)."""
    settings = {"ngram_sizes": list(NGRAM_SIZES), "min_doc_freq": MIN_DOC_FREQ, "smoothing": SMOOTHING,
                "calibration_l2": CALIBRATION_L2, "min_abs_weight": MIN_ABS_WEIGHT,
                "trained_on": "data/preference/pairs_train.jsonl (chosen = warm, rejected = curt)",
                "refit": "python -m ftlab.eval fit-tone"}
    head = json.dumps({"settings": settings, "scale": model.scale, "bias": model.bias}, ensure_ascii=False)
    lines = [f"{json.dumps(k, ensure_ascii=False)}: {v}" for k, v in sorted(model.weights.items())]
    return head[:-1] + ', "weights": {\n' + ",\n".join(lines) + "\n}}\n"


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlab.eval", description="Fit or inspect the tone scorer.")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit-tone", help="refit tone_model.json from data/preference/pairs_train.jsonl")
    fit.add_argument("--out", type=Path, default=TONE_MODEL_PATH)
    show = sub.add_parser("explain", help="score a text and list its strongest n-grams")
    show.add_argument("text")
    args = parser.parse_args(argv)

    from ftlab import data

    if args.command == "fit-tone":
        train = data.read_jsonl(data.paths.DATA_DIR / "preference" / "pairs_train.jsonl", data.PREFERENCE_SCHEMA)
        model = fit_tone_model(*tone_training_data(train))
        args.out.write_text(tone_model_json(model), encoding="utf-8")
        test = data.read_jsonl(data.paths.DATA_DIR / "preference" / "pairs_test.jsonl", data.PREFERENCE_SCHEMA)
        print(f"wrote {args.out} ({len(model.weights)} weights, scale {model.scale:.4f}, bias {model.bias:.4f}); "
              f"pairwise accuracy train {pairwise_tone_accuracy(train, model):.3f}, "
              f"test {pairwise_tone_accuracy(test, model):.3f}")
    else:
        print(f"tone_score = {tone_score(args.text):.3f}")
        for feature, weight in explain_tone(args.text):
            print(f"  {feature!r:>8} {weight:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
