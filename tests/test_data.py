"""ftlab.data: bad rows are rejected with file, line and field; prompt formats."""

import hashlib
import json

import pytest

from ftlab import data, paths

PAIRS = paths.DATA_DIR / "preference" / "pairs_train.jsonl"


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def good_pair(i):
    return {"id": f"p{i}", "prompt": "공유기가 자꾸 끊겨요.", "chosen": "답답하셨죠? 30초 뒤 다시 켜 보세요.",
            "rejected": "30초 뒤 다시 켜세요.", "fact_id": "F001", "kind": "in_kb"}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def rows_with(bad_row_at, bad):
    """Five valid pair rows as JSON lines, the one at index bad_row_at replaced by ``bad``."""
    lines = [json.dumps(good_pair(i), ensure_ascii=False) for i in range(5)]
    lines[bad_row_at] = bad if isinstance(bad, str) else json.dumps(bad, ensure_ascii=False)
    return lines


def broken(**changes):
    row = good_pair(9)
    for key, value in changes.items():
        if value is KeyError:
            del row[key]
        else:
            row[key] = value
    return row


CASES = [
    # (name, bad line, expected line, expected field, words in the message)
    ("missing field", broken(chosen=KeyError), 3, "chosen", "is missing"),
    ("empty answer", broken(chosen="   "), 3, "chosen", "is empty"),
    ("wrong type", broken(rejected=["a list"]), 3, "rejected", "must be a string"),
    ("null not allowed", broken(prompt=None), 3, "prompt", "is null"),
    ("bad choice", broken(kind="maybe"), 3, "kind", "expected one of in_kb, out_of_kb"),
    ("duplicate id", broken(id="p1"), 3, "id", "duplicates line 2"),
    ("invalid JSON", '{"id": "p9", "prompt": "x"', 3, None, "invalid JSON"),
    ("not an object", '["p9", "x"]', 3, None, "expected a JSON object"),
    ("blank middle line", "", 3, None, "blank line in the middle"),
]


@pytest.mark.parametrize("name,bad,line,field,words", CASES, ids=[c[0] for c in CASES])
def test_bad_rows_name_file_line_and_field(tmp_path, name, bad, line, field, words):
    """Each injected bad row raises DataValidationError pointing at its line and field."""
    path = write_lines(tmp_path / "pairs_bad.jsonl", rows_with(line - 1, bad))
    before = sha(path)
    with pytest.raises(data.DataValidationError) as info:
        data.read_jsonl(path, data.PREFERENCE_SCHEMA)
    err = info.value
    assert (err.line, err.field) == (line, field)
    assert str(path) in str(err) and f"line {line}" in str(err) and words in str(err)
    if field:
        assert f"field '{field}'" in str(err)
    assert isinstance(err, ValueError)
    assert sha(path) == before  # reading never rewrites the file


def test_injected_copy_of_course_file_fails_and_original_is_untouched(tmp_path):
    """Copy a real course file, empty one 'chosen' on line 17: the copy fails, the original is unchanged."""
    before = sha(PAIRS)
    lines = PAIRS.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[16])
    row["chosen"] = ""
    lines[16] = json.dumps(row, ensure_ascii=False)
    copy = write_lines(tmp_path / "pairs_train.jsonl", lines)
    with pytest.raises(data.DataValidationError, match=r"pairs_train\.jsonl line 17: field 'chosen' is empty"):
        data.read_jsonl(copy, data.PREFERENCE_SCHEMA)
    assert sha(PAIRS) == before
    assert len(data.read_jsonl(PAIRS, data.PREFERENCE_SCHEMA)) == len(lines)


def test_paths_inside_the_repo_are_shown_relative():
    schema = dict(data.FACT_SCHEMA, not_there=data.Field(str))
    with pytest.raises(data.DataValidationError) as info:
        data.read_jsonl(paths.DATA_DIR / "domain" / "facts.jsonl", schema)
    assert str(info.value) == "data/domain/facts.jsonl line 1: field 'not_there' is missing"


def test_trailing_blank_lines_are_fine_and_no_row_is_dropped(tmp_path):
    lines = [json.dumps(good_pair(i)) for i in range(4)]
    path = tmp_path / "ok.jsonl"
    path.write_text("\n".join(lines) + "\n\n\n", encoding="utf-8")
    rows = data.read_jsonl(path, data.PREFERENCE_SCHEMA)
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p3"]


def test_nullable_and_optional_fields(tmp_path):
    """fact_id may be null (out-of-KB pairs); key_aliases may be an empty list but must hold strings."""
    row = dict(good_pair(0), fact_id=None, kind="out_of_kb")
    path = write_lines(tmp_path / "p.jsonl", [json.dumps(row)])
    assert data.read_jsonl(path, data.PREFERENCE_SCHEMA)[0]["fact_id"] is None
    fact = {"id": "F1", "device": "d", "problem": "p", "answer": "a 30초", "key": "30초", "key_aliases": []}
    path = write_lines(tmp_path / "f.jsonl", [json.dumps(fact), json.dumps(dict(fact, id="F2", key_aliases=[3]))])
    with pytest.raises(data.DataValidationError, match="line 2: field 'key_aliases' must contain only strings"):
        data.read_jsonl(path, data.FACT_SCHEMA)


def test_duplicate_id_check_can_be_turned_off(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(good_pair(1))] * 2)
    with pytest.raises(data.DataValidationError):
        data.read_jsonl(path, data.PREFERENCE_SCHEMA)
    assert len(data.read_jsonl(path, data.PREFERENCE_SCHEMA, id_field=None)) == 2


def test_load_jsonl_dataset_validates_first(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", rows_with(1, broken(rejected="")))
    with pytest.raises(data.DataValidationError, match="line 2: field 'rejected' is empty"):
        data.load_jsonl_dataset(path, data.PREFERENCE_SCHEMA)
    ds = data.load_jsonl_dataset(write_lines(tmp_path / "good.jsonl", rows_with(1, good_pair(7))),
                                 data.PREFERENCE_SCHEMA)
    assert len(ds) == 5 and ds[1]["id"] == "p7"


@pytest.mark.parametrize("loader,bad", [(data.load_sft, "dev"), (data.load_general, "train"),
                                        (data.load_preference_pairs, "validation")])
def test_unknown_split_names_the_choices(loader, bad):
    with pytest.raises(ValueError, match="unknown split") as info:
        loader(bad)
    valid = {data.load_sft: data.SFT_SPLITS, data.load_general: data.GENERAL_SPLITS,
             data.load_preference_pairs: data.PREFERENCE_SPLITS}[loader]
    assert all(name in str(info.value) for name in valid)


def test_loaders_return_datasets_with_the_schema_columns():
    sft = data.load_sft("validation")
    assert set(data.SFT_SCHEMA) <= set(sft.column_names) and len(sft) > 0
    assert set(data.load_general("eval").column_names) >= {"instruction", "input", "output", "topic"}
    pairs = data.load_preference_pairs("test")
    assert {"prompt", "chosen", "rejected", "fact_id", "kind"} <= set(pairs.column_names)
    facts = data.load_facts()
    assert facts["F001"]["id"] == "F001" and facts["F001"]["key"] in facts["F001"]["answer"]


def test_load_sft_raw_keeps_every_row_and_checks_clean_id(tmp_path):
    """The raw collection loads whole (duplicates included: only ids must be unique); clean_id is required."""
    raw = data.load_sft_raw()
    assert list(raw.column_names) == list(data.SFT_RAW_SCHEMA)
    lines = (paths.DATA_DIR / "domain" / "sft_raw.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(raw) == len(lines) > len(data.load_sft("train"))
    row = json.loads(lines[4])
    del row["clean_id"]
    path = write_lines(tmp_path / "sft_raw.jsonl", lines[:4] + [json.dumps(row, ensure_ascii=False)])
    with pytest.raises(data.DataValidationError, match="line 5: field 'clean_id' is missing"):
        data.read_jsonl(path, data.SFT_RAW_SCHEMA)


ROW = {"instruction": "프린터가 안 돼요.", "input": "", "output": "전원을 확인하세요."}


def test_instruction_prompt_format():
    """The Alpaca-style Korean template; the 입력 block only when there is an input."""
    assert data.format_instruction_prompt(ROW) == "### 지시:\n프린터가 안 돼요.\n\n### 응답:\n전원을 확인하세요."
    assert data.format_instruction_prompt(ROW, with_response=False) == "### 지시:\n프린터가 안 돼요.\n\n### 응답:\n"
    with_input = dict(ROW, input="급해요.")
    assert data.format_instruction_prompt(with_input) == (
        "### 지시:\n프린터가 안 돼요.\n\n### 입력:\n급해요.\n\n### 응답:\n전원을 확인하세요.")


def test_to_messages():
    assert data.to_messages(ROW) == [{"role": "user", "content": "프린터가 안 돼요."},
                                     {"role": "assistant", "content": "전원을 확인하세요."}]
    messages = data.to_messages(dict(ROW, input="급해요."), system="친절하게 답하세요.")
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[1]["content"] == "프린터가 안 돼요.\n급해요."
    assert data.to_messages(ROW, with_response=False) == [{"role": "user", "content": "프린터가 안 돼요."}]
