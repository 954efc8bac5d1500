"""Data curation for SFT sets: deduplication and personal-data (PII) masking.

The seeds' advice "중복을 제거하고, 개인정보를 마스킹하며" in code:

- ``normalize`` folds the differences that do not change what a question asks
  (case, whitespace, punctuation), so that ``dedup_exact(..., normalized=True)``
  catches copies that differ only in spacing or a trailing "?".
- ``near_duplicate_pairs`` / ``dedup_near`` compare character 3-gram sets with
  the Jaccard similarity |A ∩ B| / |A ∪ B| and drop the later row of every pair
  above a threshold. Paraphrases of one question ("켜지지 않아요" / "안 켜져요")
  and one question form shared by many facts ("X가 안 켜질 때 어떻게 하나요?")
  both score high on the instruction alone, so compare the instruction together
  with the answer (``key=("instruction", "output")``) unless you really want to
  keep one question per form.
- ``mask_pii`` replaces Korean phone numbers, e-mail addresses, resident
  registration numbers (주민등록번호) and card numbers with placeholders such
  as ``[전화번호]``. ``find_pii`` lists what it found.

All functions take plain lists of dicts (rows of ``ftlab.data`` loaders work)
and return new lists; inputs are never modified.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

# --- deduplication ---------------------------------------------------------

_PUNCT_OR_SPACE = re.compile(r"[\s\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    """Lower-case, NFKC-normalise and drop whitespace and punctuation."""
    return _PUNCT_OR_SPACE.sub("", unicodedata.normalize("NFKC", text).lower())


def _key_text(row: dict, key: str | Sequence[str]) -> str:
    fields = (key,) if isinstance(key, str) else tuple(key)
    missing = [f for f in fields if f not in row]
    if missing:
        raise KeyError(f"row {row.get('id', '?')!r} has no field {missing[0]!r} (fields: {', '.join(row)})")
    return "\n".join(str(row[f]) for f in fields)


def dedup_exact(rows: Sequence[dict], key: str | Sequence[str] = "instruction", normalized: bool = False):
    """Keep the first row of every group with the same ``key`` text.

    ``normalized=True`` compares ``normalize(text)`` instead of the raw text.
    Returns ``(kept_rows, removed_rows)``.
    """
    seen: set[str] = set()
    kept, removed = [], []
    for row in rows:
        text = _key_text(row, key)
        text = normalize(text) if normalized else text
        (removed if text in seen else kept).append(row)
        seen.add(text)
    return kept, removed


def char_ngrams(text: str, n: int = 3) -> frozenset[str]:
    """The set of character n-grams of the normalised text (the whole text if shorter)."""
    text = normalize(text)
    if len(text) <= n:
        return frozenset([text])
    return frozenset(text[i : i + n] for i in range(len(text) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_duplicate_pairs(
    rows: Sequence[dict], key: str | Sequence[str] = "instruction", threshold: float = 0.8, n: int = 3
) -> list[tuple[int, int, float]]:
    """All index pairs ``(i, j, similarity)`` with i < j and Jaccard >= ``threshold`` (0 < threshold <= 1).

    Comparing every pair costs n² set operations, seconds for a thousand rows
    in Python. Prefix filtering (Chaudhuri et al., ICDE 2006; Bayardo et al.,
    WWW 2007) finds the same pairs much faster: order each set's n-grams from
    rarest to most common; two sets with Jaccard >= t share at least
    ceil(t * |A|) n-grams, so they must share one among the first
    ``|A| - ceil(t * |A|) + 1`` n-grams of A. Only rows sharing such a prefix
    n-gram are compared.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    grams = [char_ngrams(_key_text(row, key), n) for row in rows]
    frequency = Counter(g for row_grams in grams for g in row_grams)
    index: dict[str, list[int]] = defaultdict(list)
    candidates: set[tuple[int, int]] = set()
    for j, row_grams in enumerate(grams):
        ordered = sorted(row_grams, key=lambda g: (frequency[g], g))
        for g in ordered[: len(ordered) - math.ceil(threshold * len(ordered) - 1e-9) + 1]:
            candidates.update((i, j) for i in index[g])
            index[g].append(j)
    pairs = []
    for i, j in sorted(candidates):
        similarity = jaccard(grams[i], grams[j])
        if similarity >= threshold:
            pairs.append((i, j, similarity))
    return pairs


def dedup_near(
    rows: Sequence[dict], key: str | Sequence[str] = "instruction", threshold: float = 0.8, n: int = 3
):
    """Drop the later row of every near-duplicate pair. Returns ``(kept_rows, removed_rows)``."""
    drop = {j for i, j, _ in near_duplicate_pairs(rows, key, threshold, n)}
    kept = [row for index, row in enumerate(rows) if index not in drop]
    removed = [row for index, row in enumerate(rows) if index in drop]
    return kept, removed


# --- PII masking -------------------------------------------------------------

# Order matters: resident numbers and card numbers are digit runs that a loose
# phone pattern could partly match, so they are masked first.
PII_PATTERNS: dict[str, re.Pattern] = {
    # local@domain.tld
    "이메일": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    # YYMMDD-GNNNNNN, G = 1..4 (born 1900-2099), 5..8 (foreign residents)
    "주민번호": re.compile(r"(?<!\d)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\s?-?\s?[1-8]\d{6}(?!\d)"),
    # 16 digits in groups of four, separated by '-' or spaces (or none); Amex-style 4-6-5 too
    "카드번호": re.compile(r"(?<!\d)(?:\d{4}[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}|\d{4}[- ]?\d{6}[- ]?\d{5})(?!\d)"),
    # mobile 010/011/016-019, Seoul 02, regions 031-064, 070 internet phones, +82 forms
    "전화번호": re.compile(
        r"(?<![\d+])\(?(?:\+82[- ]?(?:10|1[16-9]|2|[3-6][1-5]|70)|01[016-9]|02|0[3-6][1-5]|070)"
        r"(?:\)\s?|[- .])?\d{3,4}[- .]?\d{4}(?!\d)"
    ),
}


@dataclass(frozen=True)
class PiiMatch:
    """One piece of personal data found in a text."""

    kind: str  # a key of PII_PATTERNS, also the placeholder's label
    text: str
    start: int
    end: int


def find_pii(text: str) -> list[PiiMatch]:
    """Every PII match in ``text``, in order; overlapping matches keep the earlier pattern."""
    found: list[PiiMatch] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in PII_PATTERNS.items():
        for match in pattern.finditer(text):
            if any(match.start() < end and start < match.end() for start, end in taken):
                continue
            found.append(PiiMatch(kind, match.group(), match.start(), match.end()))
            taken.append((match.start(), match.end()))
    return sorted(found, key=lambda m: m.start)


def mask_pii(text: str) -> str:
    """Replace every PII match with ``[kind]``, e.g. ``010-1234-5678`` -> ``[전화번호]``."""
    pieces, cursor = [], 0
    for match in find_pii(text):
        pieces += [text[cursor : match.start], f"[{match.kind}]"]
        cursor = match.end
    return "".join(pieces) + text[cursor:]


def mask_rows(rows: Iterable[dict], fields: Sequence[str] = ("instruction", "input", "output")):
    """Mask PII in the given fields of every row. Returns ``(masked_rows, counts_by_kind)``."""
    masked, counts = [], {kind: 0 for kind in PII_PATTERNS}
    for row in rows:
        new = dict(row)
        for field in fields:
            if isinstance(new.get(field), str):
                for match in find_pii(new[field]):
                    counts[match.kind] += 1
                new[field] = mask_pii(new[field])
        masked.append(new)
    return masked, counts
