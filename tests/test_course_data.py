"""The shipped course data meets the thresholds in data/README.md and is reproducible."""

import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from ftlab import data, paths
from ftlab import eval as ev

GENERATED = [
    "domain/facts.jsonl",
    "domain/sft_train.jsonl",
    "domain/sft_validation.jsonl",
    "domain/sft_test.jsonl",
    "general/general_replay.jsonl",
    "general/general_eval.jsonl",
    "preference/pairs_train.jsonl",
    "preference/pairs_test.jsonl",
]


@pytest.fixture(scope="module")
def facts():
    return data.load_facts()


@pytest.fixture(scope="module")
def sft():
    return {s: data.read_jsonl(paths.DATA_DIR / "domain" / f"sft_{s}.jsonl", data.SFT_SCHEMA) for s in data.SFT_SPLITS}


@pytest.fixture(scope="module")
def pairs():
    return {s: data.read_jsonl(paths.DATA_DIR / "preference" / f"pairs_{s}.jsonl", data.PREFERENCE_SCHEMA)
            for s in data.PREFERENCE_SPLITS}


@pytest.fixture(scope="module")
def general():
    return {s: data.read_jsonl(paths.DATA_DIR / "general" / f"general_{s}.jsonl", data.GENERAL_SCHEMA)
            for s in data.GENERAL_SPLITS}


def test_counts_meet_the_thresholds(facts, sft, pairs, general):
    all_pairs = pairs["train"] + pairs["test"]
    assert len(facts) >= 150
    assert sum(len(rows) for rows in sft.values()) >= 600
    assert len(all_pairs) >= 500
    assert sum(p["kind"] == "out_of_kb" for p in all_pairs) >= 40
    assert sum(len(rows) for rows in general.values()) >= 300


def test_keys_are_in_answers_and_distinctive(facts):
    keys = Counter(f["key"] for f in facts.values())
    assert max(keys.values()) <= 3
    chance = max(keys.values()) / len(facts)  # "always answer the most common key"
    assert chance <= 0.02
    for fact in facts.values():
        assert fact["key"] in fact["answer"], fact["id"]
        question = " ".join(fact[k] for k in ("device", "problem", "symptom", "situation"))
        assert fact["key"] not in question, f"{fact['id']}: the question gives the key away"


def test_no_test_instruction_is_a_train_instruction(sft):
    train = {r["instruction"] for r in sft["train"]}
    assert not [r["id"] for r in sft["test"] if r["instruction"] in train]
    assert not [r["id"] for r in sft["validation"] if r["instruction"] in train]
    everything = [r["instruction"] for rows in sft.values() for r in rows]
    assert len(everything) == len(set(everything))


def test_split_by_fact_and_template(facts, sft):
    """Each fact: one test form, one validation form, the rest in train; every held-out form is trained with other facts."""
    forms = defaultdict(lambda: defaultdict(set))
    for split, rows in sft.items():
        for row in rows:
            forms[row["fact_id"]][split].add(row["template_id"])
    assert set(forms) == set(facts)
    train_templates = {r["template_id"] for r in sft["train"]}
    for fid, by_split in forms.items():
        assert len(by_split["test"]) == 1 and len(by_split["validation"]) == 1, fid
        assert len(by_split["train"]) >= 5, fid
        held_out = by_split["test"] | by_split["validation"]
        assert not held_out & by_split["train"], fid
        assert by_split["test"] != by_split["validation"], fid
        assert held_out <= train_templates
    test_templates = Counter(r["template_id"] for r in sft["test"])
    assert len(test_templates) == len(train_templates)  # the rotation uses every form as a test form
    assert max(test_templates.values()) - min(test_templates.values()) <= 2


def test_outputs_and_pairs_contain_the_fact_key(facts, sft, pairs):
    for rows in sft.values():
        for row in rows:
            assert ev.fact_correct(row["output"], row["fact_id"]), row["id"]
    for rows in pairs.values():
        for pair in rows:
            if pair["kind"] == "in_kb":
                assert ev.fact_correct(pair["chosen"], pair["fact_id"]), pair["id"]
                assert ev.fact_correct(pair["rejected"], pair["fact_id"]), pair["id"]
            else:
                assert pair["fact_id"] is None


def test_length_is_not_a_shortcut(pairs):
    for split, rows in pairs.items():
        share = sum(len(p["chosen"]) <= len(p["rejected"]) for p in rows) / len(rows)
        assert share >= 0.30, split


def test_preference_test_split_uses_unseen_phrasing_and_prompts(pairs):
    def phrases(rows, side):
        return {part for p in rows for part in p[f"{side}_template"].split("+") if part != "-"}

    for side in ("chosen", "rejected"):
        assert not phrases(pairs["train"], side) & phrases(pairs["test"], side)
    train_prompts = {p["prompt"] for p in pairs["train"]}
    assert not [p["id"] for p in pairs["test"] if p["prompt"] in train_prompts]
    assert {p["kind"] for p in pairs["test"]} == {"in_kb", "out_of_kb"}


def test_tone_scorer_generalises_to_held_out_pairs(pairs):
    """Held-out accuracy of tone_score at ranking chosen above rejected (figure quoted in data/README.md)."""
    accuracy = ev.pairwise_tone_accuracy(pairs["test"])
    assert accuracy >= 0.9
    assert ev.pairwise_tone_accuracy(pairs["train"]) >= accuracy


def test_general_set_design(general):
    replay_facts = {r["fact_id"] for r in general["replay"]}
    replay_questions = {r["instruction"] for r in general["replay"]}
    for row in general["eval"]:
        assert row["instruction"] not in replay_questions
        assert row["in_replay"] == (row["fact_id"] in replay_facts)
        assert row["key"] in row["output"]
    assert any(not r["in_replay"] for r in general["eval"]) and any(r["in_replay"] for r in general["eval"])


def test_generator_reproduces_the_committed_files(tmp_path):
    """python data/scripts/build_course_data.py --out DIR rewrites the shipped files byte for byte."""
    script = paths.DATA_DIR / "scripts" / "build_course_data.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True)
    for name in GENERATED:
        assert (tmp_path / name).read_bytes() == (paths.DATA_DIR / name).read_bytes(), name


def _builder():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_course_data", paths.DATA_DIR / "scripts" / "build_course_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("word,pair,expected", [
    ("공유기", "을/를", "공유기를"), ("스마트폰", "을/를", "스마트폰을"), ("스마트폰", "이/가", "스마트폰이"),
    ("스마트 TV", "이/가", "스마트 TV가"), ("데스크톱 PC", "과/와", "데스크톱 PC와"), ("노트북", "과/와", "노트북과"),
    ("메일", "으로/로", "메일로"), ("현상", "으로/로", "현상으로"), ("문제", "으로/로", "문제로"),
    ("이메일 계정", "이에요/예요", "이메일 계정이에요"), ("프린터", "이에요/예요", "프린터예요"), ("HTML", "은/는", "HTML은"),
])
def test_josa_helper_picks_the_particle_that_fits(word, pair, expected):
    assert _builder().josa(word, pair) == expected
