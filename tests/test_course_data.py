"""The shipped course data meets the thresholds in data/README.md and is reproducible."""

import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from ftlab import curation, data, paths
from ftlab import eval as ev

GENERATED = [
    "domain/facts.jsonl",
    "domain/sft_train.jsonl",
    "domain/sft_validation.jsonl",
    "domain/sft_test.jsonl",
    "domain/sft_raw.jsonl",
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
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl")) == sorted(GENERATED)
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


# --- the raw collection for lab 05 (domain/sft_raw.jsonl) ---------------------

RAW_KEY = ("instruction", "input")
TEXT_FIELDS = ("instruction", "input", "output")


@pytest.fixture(scope="module")
def builder():
    return _builder()


@pytest.fixture(scope="module")
def raw():
    return data.read_jsonl(paths.DATA_DIR / "domain" / "sft_raw.jsonl", data.SFT_RAW_SCHEMA)


def canonical_rows(raw):
    """The first raw row of every train id (the generator puts the canonical form first)."""
    first = {}
    for row in raw:
        first.setdefault(row["clean_id"], row)
    return first


def pii(text):
    return [(m.kind, m.text) for m in curation.find_pii(text)]


def pii_carrier(builder, field, clean_text, raw_text):
    """The carrier of PII_CARRIERS that turns clean_text into raw_text with the PII find_pii reports, or None."""
    found = pii(raw_text)
    for carrier in builder.PII_CARRIERS[field]:
        kinds = builder.carrier_kinds(carrier)
        if [k for k, _ in found] == kinds and builder.fill_carrier(carrier, clean_text, dict(found)) == raw_text:
            return carrier
    return None


def test_raw_contamination_counts(builder, sft, raw):
    train = {r["id"]: r for r in sft["train"]}
    first = canonical_rows(raw)
    assert sorted(first) == sorted(train) and [r["id"] for r in raw] == [f"raw-{n:04d}" for n in range(1, len(raw) + 1)]
    kinds = Counter()
    for row in raw:
        origin = first[row["clean_id"]]
        if row is origin:
            continue
        assert row["output"] == origin["output"]  # copies and variants never edit the answer
        a, b = curation._key_text(row, RAW_KEY), curation._key_text(origin, RAW_KEY)
        kinds["exact" if a == b else "surface" if curation.normalize(a) == curation.normalize(b) else "near"] += 1
    assert kinds == {"exact": builder.RAW_EXACT_COPIES, "surface": builder.RAW_SURFACE_VARIANTS,
                     "near": builder.RAW_NEAR_VARIANTS}
    with_pii = [r for r in first.values() if any(r[f] != train[r["clean_id"]][f] for f in TEXT_FIELDS)]
    assert len(with_pii) == builder.RAW_PII_ROWS
    assert 0.04 <= len(with_pii) / len(train) <= 0.08 and 0.10 <= kinds["exact"] / len(train) <= 0.14
    assert 0.06 <= (kinds["surface"] + kinds["near"]) / len(train) <= 0.10


def test_raw_inserted_pii_is_found_with_its_kind(builder, sft, raw):
    """Each canonical row is the train row, or the train row with one carrier sentence whose PII find_pii
    reports in full and with the right kind; copies and variants keep exactly the PII of their origin."""
    train = {r["id"]: r for r in sft["train"]}
    first = canonical_rows(raw)
    kinds = Counter()
    for row in first.values():
        for field in TEXT_FIELDS:
            clean = train[row["clean_id"]][field]
            if row[field] == clean:
                assert pii(row[field]) == [], (row["id"], field)
            else:
                assert pii_carrier(builder, field, clean, row[field]), (row["id"], field, row[field])
                kinds.update(k for k, _ in pii(row[field]))
    assert set(kinds) == set(curation.PII_PATTERNS)  # every kind occurs
    for row in raw:
        for field in TEXT_FIELDS:
            assert pii(row[field]) == pii(first[row["clean_id"]][field]), (row["id"], field)


def test_no_pii_in_the_clean_files():
    """find_pii reports nothing in any shipped file but the raw one (no false positives to mask)."""
    for name in GENERATED:
        if name == "domain/sft_raw.jsonl":
            continue
        for line, row in enumerate(data.read_jsonl(paths.DATA_DIR / name, {}, id_field=None), 1):
            for field, value in row.items():
                for text in value if isinstance(value, list) else [value]:
                    if isinstance(text, str):
                        assert pii(text) == [], f"{name} line {line} field {field}: {pii(text)}"


def test_near_duplicate_threshold_separates_variants_from_distinct_rows(builder, sft, raw):
    """Char-3-gram Jaccard on instruction+input: every variant scores above RAW_NEAR_THRESHOLD against its
    origin, every pair of distinct train rows below it (some distinct rows share a question form: >= 0.7)."""
    first = canonical_rows(raw)
    variants = [curation.jaccard(curation.char_ngrams(curation._key_text(r, RAW_KEY)),
                                 curation.char_ngrams(curation._key_text(first[r["clean_id"]], RAW_KEY)))
                for r in raw if r is not first[r["clean_id"]]]
    distinct = [s for _, _, s in curation.near_duplicate_pairs(sft["train"], key=RAW_KEY, threshold=0.5)]
    assert min(variants) > builder.RAW_NEAR_THRESHOLD > max(distinct)
    assert any(s >= 0.7 for s in distinct)  # the teaching point: 0.7 would drop legitimate rows
    cross = [s for i, j, s in curation.near_duplicate_pairs(raw, key=RAW_KEY, threshold=builder.RAW_NEAR_THRESHOLD)
             if raw[i]["clean_id"] != raw[j]["clean_id"]]
    assert cross == []


def test_curation_pipeline_recovers_the_train_set(builder, sft, raw):
    """dedup_exact(normalized) -> dedup_near(RAW_NEAR_THRESHOLD) -> mask_rows leaves one row per train id:
    the train row itself, or the train row plus its carrier sentence with [kind] placeholders; no PII left."""
    kept, removed = curation.dedup_exact(raw, key=RAW_KEY, normalized=True)
    assert len(removed) == builder.RAW_EXACT_COPIES + builder.RAW_SURFACE_VARIANTS
    kept, removed = curation.dedup_near(kept, key=RAW_KEY, threshold=builder.RAW_NEAR_THRESHOLD)
    assert len(removed) == builder.RAW_NEAR_VARIANTS
    masked, counts = curation.mask_rows(kept)
    train = {r["id"]: r for r in sft["train"]}
    assert sorted(r["clean_id"] for r in masked) == sorted(train)
    placeholders = {kind: f"[{kind}]" for kind in curation.PII_PATTERNS}
    changed = 0
    for row in masked:
        clean = train[row["clean_id"]]
        for field in TEXT_FIELDS:
            assert pii(row[field]) == [], (row["id"], field)
            if row[field] != clean[field]:
                changed += 1
                assert any(builder.fill_carrier(c, clean[field], placeholders) == row[field]
                           for c in builder.PII_CARRIERS[field]), (row["id"], field, row[field])
    assert changed == builder.RAW_PII_ROWS and sum(counts.values()) >= builder.RAW_PII_ROWS
