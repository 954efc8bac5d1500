"""JSONL loaders with schema validation, and the prompt formats of the course.

Every course file is JSON Lines: one JSON object per line. The loaders check
every line against a small declarative schema and stop at the first bad row
with an error that names the file, the line and the field, e.g.::

    DataValidationError: data/preference/pairs_train.jsonl line 17: field 'chosen' is empty

No row is ever dropped silently. Typical use in a lab::

    from ftlab import data
    train = data.load_sft("train")                  # datasets.Dataset
    raw = data.load_sft_raw()                       # sft_train before curation (lab 05)
    facts = data.load_facts()                       # {"F001": {...}, ...}
    pairs = data.load_preference_pairs("train")     # prompt / chosen / rejected
    data.format_instruction_prompt(train[0])        # "### 지시:\\n...\\n\\n### 응답:\\n..."
    data.to_messages(train[0])                      # [{"role": "user", ...}, {"role": "assistant", ...}]

What the files contain and how they were made: ``data/README.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ftlab import paths


class DataValidationError(ValueError):
    """A malformed row: ``path`` (as shown), ``line`` (1-based) and ``field`` (or None) say where."""

    def __init__(self, path: str, line: int, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = path, line, field, problem
        where = f"{path} line {line}"
        super().__init__(f"{where}: field '{field}' {problem}" if field else f"{where}: {problem}")


@dataclass(frozen=True)
class Field:
    """One field of a schema.

    type:      the Python type the JSON value must have (str, list, bool, int, float)
    required:  the field must be present
    nonempty:  strings must not be blank, lists must not be empty
    nullable:  JSON null is accepted
    items:     type of each list element (lists only)
    choices:   the allowed values, if restricted
    """

    type: type = str
    required: bool = True
    nonempty: bool = True
    nullable: bool = False
    items: type | None = None
    choices: tuple | None = None


Schema = Mapping[str, Field]

# Knowledge base: one fact per row (data/domain/facts.jsonl).
FACT_SCHEMA: Schema = {
    "id": Field(str),
    "device": Field(str),
    "problem": Field(str),  # noun phrase ending in 문제/현상/상황
    "symptom": Field(str, required=False),  # how a user says it (해요체)
    "situation": Field(str, required=False),  # "~ㄹ 때" form
    "answer": Field(str),  # canonical, matter-of-fact answer
    "key": Field(str),  # a correct answer must contain it
    "key_aliases": Field(list, required=False, nonempty=False, items=str),
}

# Instruction-Input-Response rows (data/domain/sft_*.jsonl).
SFT_SCHEMA: Schema = {
    "id": Field(str),
    "fact_id": Field(str),
    "template_id": Field(str),
    "instruction": Field(str),
    "input": Field(str, nonempty=False),  # "" for most rows
    "output": Field(str),
}

# The raw, uncurated collection behind sft_train (data/domain/sft_raw.jsonl):
# duplicates, near duplicates and synthetic personal data, for lab 05's curation.
SFT_RAW_SCHEMA: Schema = {
    "id": Field(str),  # raw-0001, ...
    "instruction": Field(str),
    "input": Field(str, nonempty=False),
    "output": Field(str),
    "clean_id": Field(str),  # the sft_train row it derives from: ground truth for checking, not a feature
}

# General-knowledge Q&A for replay and forgetting (data/general/*.jsonl).
GENERAL_SCHEMA: Schema = {
    "id": Field(str),
    "instruction": Field(str),
    "input": Field(str, nonempty=False),
    "output": Field(str),
    "topic": Field(str),
    "fact_id": Field(str, required=False),  # the same fact phrased several ways shares it
    "key": Field(str, required=False),  # short string a correct answer contains
    "in_replay": Field(bool, required=False),  # is this fact also in general_replay?
}

# Preference pairs for DPO (data/preference/pairs_*.jsonl).
PREFERENCE_SCHEMA: Schema = {
    "id": Field(str),
    "prompt": Field(str),
    "chosen": Field(str),
    "rejected": Field(str),
    "fact_id": Field(str, nullable=True),  # null for out-of-KB questions
    "kind": Field(str, choices=("in_kb", "out_of_kb")),
    "chosen_template": Field(str, required=False),
    "rejected_template": Field(str, required=False),
}

SFT_SPLITS = ("train", "validation", "test")
GENERAL_SPLITS = ("replay", "eval")
PREFERENCE_SPLITS = ("train", "test")

_TYPE_NAMES = {str: "a string", list: "a list", bool: "true or false", int: "an integer", float: "a number",
               dict: "an object"}
_PLURAL_NAMES = {str: "strings", bool: "true/false values", int: "integers", float: "numbers", dict: "objects",
                 list: "lists"}


def display_path(path: str | Path) -> str:
    """The path relative to the repository root when it is inside it (as error messages show it)."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(paths.REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def _is_type(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def validate_row(row: Any, schema: Schema, where: str, line: int) -> None:
    """Raise DataValidationError if ``row`` does not match ``schema``."""
    if not isinstance(row, dict):
        raise DataValidationError(where, line, None, f"expected a JSON object, got {type(row).__name__}")
    for name, spec in schema.items():
        if name not in row:
            if spec.required:
                raise DataValidationError(where, line, name, "is missing")
            continue
        value = row[name]
        if value is None:
            if spec.nullable:
                continue
            raise DataValidationError(where, line, name, "is null")
        if not _is_type(value, spec.type):
            raise DataValidationError(where, line, name, f"must be {_TYPE_NAMES.get(spec.type, spec.type.__name__)}, "
                                                         f"got {type(value).__name__} {value!r:.40}")
        if spec.nonempty and isinstance(value, (str, list)) and not (value.strip() if isinstance(value, str) else value):
            raise DataValidationError(where, line, name, "is empty")
        if spec.items is not None:
            for item in value:
                if not _is_type(item, spec.items):
                    raise DataValidationError(where, line, name, f"must contain only {_PLURAL_NAMES[spec.items]}")
        if spec.choices is not None and value not in spec.choices:
            raise DataValidationError(where, line, name, f"is {value!r}; expected one of {', '.join(spec.choices)}")


def read_jsonl(path: str | Path, schema: Schema, id_field: str | None = "id") -> list[dict]:
    """Read and validate every line of a JSONL file; return the rows in file order.

    Rejects invalid JSON, non-objects, missing fields, wrong types, empty
    strings where the schema requires text, duplicate ``id_field`` values
    (``None`` turns that check off) and blank lines in the middle of the file.
    Blank lines at the end are fine.
    """
    where = display_path(path)
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    while lines and not lines[-1].strip():
        lines.pop()  # trailing newline(s)
    rows: list[dict] = []
    first_seen: dict[Any, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataValidationError(where, number, None, "blank line in the middle of the file")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataValidationError(where, number, None, f"invalid JSON ({err.msg} at column {err.colno})") from None
        validate_row(row, schema, where, number)
        if id_field is not None:
            key = row.get(id_field)
            if key in first_seen:
                raise DataValidationError(where, number, id_field,
                                          f"duplicates line {first_seen[key]} (value {key!r})")
            first_seen[key] = number
        rows.append(row)
    return rows


def load_jsonl_dataset(path: str | Path, schema: Schema, id_field: str | None = "id"):
    """Validate a JSONL file, then return it as a ``datasets.Dataset``."""
    from datasets import Dataset

    return Dataset.from_list(read_jsonl(path, schema, id_field))


def _check_split(split: str, valid: tuple[str, ...]) -> None:
    if split not in valid:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(valid)}")


def load_facts(path: str | Path | None = None) -> dict[str, dict]:
    """The knowledge base as ``{fact_id: fact}`` (data/domain/facts.jsonl)."""
    rows = read_jsonl(path or paths.DATA_DIR / "domain" / "facts.jsonl", FACT_SCHEMA)
    return {row["id"]: row for row in rows}


def load_sft(split: str):
    """SFT rows of one split: ``"train"``, ``"validation"`` or ``"test"``."""
    _check_split(split, SFT_SPLITS)
    return load_jsonl_dataset(paths.DATA_DIR / "domain" / f"sft_{split}.jsonl", SFT_SCHEMA)


def load_sft_raw():
    """The uncurated collection behind ``sft_train`` (data/domain/sft_raw.jsonl), for the curation lab.

    Every train row once (about 6% of them with synthetic phone numbers, e-mail
    addresses, card or resident numbers), plus exact copies, copies that differ
    in spaces or punctuation, and near copies ("…하죠?ㅠㅠ"). ``clean_id`` names
    the train row a raw row comes from: use it only to check a curation (e.g.
    ``ftlab.curation.dedup_exact`` then ``dedup_near`` then ``mask_rows``), never
    as an input to it. Rows are validated like every other file; nothing is dropped.
    """
    return load_jsonl_dataset(paths.DATA_DIR / "domain" / "sft_raw.jsonl", SFT_RAW_SCHEMA)


def load_general(split: str):
    """General-knowledge Q&A: ``"replay"`` (mixed into SFT) or ``"eval"`` (forgetting)."""
    _check_split(split, GENERAL_SPLITS)
    return load_jsonl_dataset(paths.DATA_DIR / "general" / f"general_{split}.jsonl", GENERAL_SCHEMA)


def load_preference_pairs(split: str):
    """Preference pairs of one split: ``"train"`` or ``"test"``."""
    _check_split(split, PREFERENCE_SPLITS)
    return load_jsonl_dataset(paths.DATA_DIR / "preference" / f"pairs_{split}.jsonl", PREFERENCE_SCHEMA)


def user_content(example: Mapping) -> str:
    """The user turn: the instruction, then the input on the next line when there is one."""
    extra = example.get("input") or ""
    return f"{example['instruction']}\n{extra}" if extra.strip() else example["instruction"]


def to_messages(example: Mapping, system: str | None = None, with_response: bool = True) -> list[dict]:
    """An Instruction-Input-Response row as chat messages.

    ``[{"role": "system", ...}]`` (only if ``system``), the user turn
    (instruction + input), and the assistant turn with ``output`` (unless
    ``with_response=False``, e.g. to build a generation prompt).
    """
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user_content(example)})
    if with_response:
        messages.append({"role": "assistant", "content": example["output"]})
    return messages


def format_instruction_prompt(example: Mapping, with_response: bool = True) -> str:
    """The Alpaca-style Korean prompt used when training without a chat template.

    ``### 지시:\\n{instruction}\\n\\n### 입력:\\n{input}\\n\\n### 응답:\\n{output}``; the
    입력 block is left out when the input is empty, and with
    ``with_response=False`` the text ends right after ``### 응답:\\n`` (the
    prompt to generate from). Keep it byte-identical between training and
    inference.
    """
    parts = [f"### 지시:\n{example['instruction']}"]
    extra = example.get("input") or ""
    if extra.strip():
        parts.append(f"### 입력:\n{extra}")
    response = example["output"] if with_response else ""
    parts.append(f"### 응답:\n{response}")
    return "\n\n".join(parts)
