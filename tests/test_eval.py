"""ftlab.eval: tone scorer, fact checker and repetition rate behave as documented."""

import json

import pytest

from ftlab import data
from ftlab import eval as ev


def test_tone_score_is_a_probability_and_orders_registers():
    warm = "많이 답답하셨죠? 공유기 전원을 뽑고 30초쯤 기다린 뒤 다시 꽂으세요. 도움이 되셨으면 좋겠어요."
    curt = "그냥 공유기 전원을 뽑고 30초쯤 기다린 뒤 다시 꽂으세요. 끝."
    bare = "공유기 전원을 뽑고 30초쯤 기다린 뒤 다시 꽂으세요."
    scores = [ev.tone_score(t) for t in (warm, bare, curt, "")]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > 0.9 and scores[1] < 0.5 and scores[2] < 0.1
    assert scores[0] > scores[1] > scores[2]


def test_canonical_answers_score_as_not_warm():
    """The stiff SFT answers (the DPO starting point) must read as not warm on average."""
    facts = data.load_facts().values()
    scores = [ev.tone_score(f["answer"]) for f in facts]
    assert sum(scores) / len(scores) < 0.2
    assert sum(s > 0.5 for s in scores) / len(scores) < 0.05


def test_explain_tone_lists_the_pieces_that_drive_the_score():
    explained = ev.explain_tone("많이 답답하셨죠? 그냥 껐다 켜세요.", top=None)
    features = dict(explained)
    assert features["하셨"] > 0 and features["그냥"] < 0
    weights = [abs(w) for _, w in explained]
    assert weights == sorted(weights, reverse=True)
    model = ev.load_tone_model()
    z = model.scale * sum(w for _, w in explained) + model.bias
    assert ev.tone_score("많이 답답하셨죠? 그냥 껐다 켜세요.") == pytest.approx(ev._sigmoid(z))
    assert len(ev.explain_tone("많이 답답하셨죠? 그냥 껐다 켜세요.", top=3)) == 3


def test_repeated_phrase_counts_once_in_tone():
    once = ev.tone_score("걱정되셨죠? 재부팅하세요.")
    many = ev.tone_score("걱정되셨죠? 걱정되셨죠? 걱정되셨죠? 재부팅하세요.")
    assert many == pytest.approx(once, abs=0.05)


def test_fit_is_deterministic_and_reproduces_the_shipped_model():
    """Refitting on pairs_train gives the weights in tone_model.json (python -m ftlab.eval fit-tone)."""
    train = data.read_jsonl(data.paths.DATA_DIR / "preference" / "pairs_train.jsonl", data.PREFERENCE_SCHEMA)
    fitted = ev.fit_tone_model(*ev.tone_training_data(train))
    shipped = ev.load_tone_model()
    assert fitted.weights == shipped.weights
    assert fitted.scale == pytest.approx(shipped.scale, abs=1e-5)
    assert fitted.bias == pytest.approx(shipped.bias, abs=1e-5)
    assert json.loads(ev.tone_model_json(fitted))["weights"] == shipped.weights


def test_fit_weights_are_log_ratios_of_presence():
    texts = ["고마워요 a", "고마워요 b", "그냥 a", "그냥 b"]
    model = ev.fit_tone_model(texts, [1, 1, 0, 0])
    assert model.weights["고마"] > 0 and model.weights["그냥"] < 0
    assert " a" not in model.weights  # in both classes equally: weight 0, not shipped
    assert model.score("고마워요") > 0.5 > model.score("그냥")


@pytest.mark.parametrize("answer,expected", [
    ("공유기 전원을 뽑고 30초쯤 기다린 뒤 다시 꽂으세요.", True),
    ("공유기 전원을 뽑고 30 초쯤 기다리세요!", True),  # spaces and punctuation are ignored
    ("공유기를 다시 켜세요.", False),
    ("", False),
])
def test_fact_correct_uses_the_key(answer, expected):
    assert ev.fact_correct(answer, "F001") is expected


def test_fact_correct_accepts_aliases_and_case():
    facts = data.load_facts()
    fid, fact = next((i, f) for i, f in facts.items() if f["key_aliases"])
    assert ev.fact_correct(f"... {fact['key_aliases'][0]} ...", fid)
    caps = next(i for i, f in facts.items() if f["key"] == "Caps Lock")
    assert ev.fact_correct("capslock 키를 누르세요", caps)


def test_fact_accuracy_and_errors():
    assert ev.fact_accuracy(["30초 뒤 켜세요", "모르겠어요"], ["F001", "F001"]) == 0.5
    with pytest.raises(ValueError, match="2 answers but 1 fact ids"):
        ev.fact_accuracy(["a", "b"], ["F001"])
    with pytest.raises(KeyError, match="unknown fact id"):
        ev.fact_correct("x", "F999")


@pytest.mark.parametrize("text,expected", [
    ("공유기 전원을 뽑고 30초쯤 기다린 뒤 다시 꽂으세요.", 0.0),
    ("걱정되셨죠? 걱정되셨죠?", 0.5),
    ("걱정되셨죠? 걱정되셨죠? 걱정되셨죠? 걱정되셨죠? 걱정되셨죠?", 2 / 3),  # 3 trigrams, 2 repeats
    ("", 0.0),
    ("한 단어", 0.0),
])
def test_repetition_rate(text, expected):
    assert ev.repetition_rate(text) == pytest.approx(expected)


def test_repetition_rate_grows_with_loops():
    base = "많이 답답하셨죠? 공유기를 껐다 켜 보세요."
    looped = base + " 걱정되셨죠? 걱정되셨죠? 걱정되셨죠? 걱정되셨죠? 걱정되셨죠? 걱정되셨죠?"
    assert ev.repetition_rate(base) == 0.0 < ev.repetition_rate(looped) < 1.0
