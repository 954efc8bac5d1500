"""ftlab.curation: deduplication and PII masking."""

import pytest

from ftlab import curation


def row(i, instruction, output="답", **extra):
    return {"id": f"r{i}", "instruction": instruction, "input": "", "output": output, **extra}


def test_normalize_folds_case_space_and_punctuation():
    assert curation.normalize("  Wi-Fi가 안 돼요?! ") == curation.normalize("wifi가 안돼요")


def test_dedup_exact_raw_and_normalized():
    rows = [row(0, "공유기가 안 켜져요"), row(1, "공유기가 안 켜져요"), row(2, "공유기가  안 켜져요?"), row(3, "다른 질문")]
    kept, removed = curation.dedup_exact(rows)
    assert [r["id"] for r in kept] == ["r0", "r2", "r3"] and [r["id"] for r in removed] == ["r1"]
    kept, removed = curation.dedup_exact(rows, normalized=True)
    assert [r["id"] for r in kept] == ["r0", "r3"] and len(removed) == 2
    assert rows[1]["id"] == "r1"  # input untouched


def test_dedup_on_several_fields_keeps_same_question_with_different_answers():
    rows = [row(0, "어떻게 하나요?", "재부팅"), row(1, "어떻게 하나요?", "초기화")]
    kept, removed = curation.dedup_exact(rows, key=("instruction", "output"))
    assert len(kept) == 2 and removed == []


def test_missing_key_names_the_field():
    with pytest.raises(KeyError, match="instruction"):
        curation.dedup_exact([{"id": "x", "output": "a"}])


def test_jaccard_and_ngrams():
    a, b = curation.char_ngrams("abcd"), curation.char_ngrams("abce")
    assert a == {"abc", "bcd"} and curation.jaccard(a, b) == pytest.approx(1 / 3)
    assert curation.char_ngrams("ab") == {"ab"}
    assert curation.jaccard(frozenset(), frozenset()) == 1.0


def test_near_duplicates_found_and_distinct_questions_kept():
    rows = [
        row(0, "스마트폰 배터리가 너무 빨리 닳아요. 어떻게 해야 하나요?"),
        row(1, "프린터에서 종이가 걸렸을 때는 어떻게 하나요?"),
        row(2, "스마트폰 배터리가 너무 빨리 닳아요 어떻게 해야 하나요"),  # punctuation only
        row(3, "스마트폰 배터리가 너무 빨리 닳아요. 어떻게 해야 할까요?"),  # one word changed
    ]
    pairs = curation.near_duplicate_pairs(rows, threshold=0.7)
    assert {(i, j) for i, j, _ in pairs} == {(0, 2), (0, 3), (2, 3)}
    kept, removed = curation.dedup_near(rows, threshold=0.7)
    assert [r["id"] for r in kept] == ["r0", "r1"] and [r["id"] for r in removed] == ["r2", "r3"]
    assert curation.near_duplicate_pairs(rows, threshold=1.0) == [(0, 2, 1.0)]


@pytest.mark.parametrize(
    "text",
    [
        "010-1234-5678", "01012345678", "010 1234 5678", "011-123-4567", "02-123-4567", "(02) 1234-5678",
        "031-987-6543", "070-1234-5678", "+82 10-1234-5678", "+82-10-1234-5678",
    ],
)
def test_phone_numbers_masked(text):
    assert curation.mask_pii(f"연락처는 {text}입니다.") == "연락처는 [전화번호]입니다."


@pytest.mark.parametrize("text", ["hong.gildong@example.com", "a_b+tag@mail.co.kr", "USER@Example.ORG"])
def test_emails_masked(text):
    assert curation.mask_pii(f"메일: {text} 로 보내 주세요") == "메일: [이메일] 로 보내 주세요"


@pytest.mark.parametrize("text", ["900101-1234567", "0512314234567", "991231 - 2345678", "020229-3123456"])
def test_resident_numbers_masked(text):
    assert curation.mask_pii(f"주민번호 {text} 확인") == "주민번호 [주민번호] 확인"


@pytest.mark.parametrize("text", ["1234-5678-9012-3456", "1234 5678 9012 3456", "1234567890123456", "3782-822463-10005"])
def test_card_numbers_masked(text):
    assert curation.mask_pii(f"카드 {text} 결제") == "카드 [카드번호] 결제"


@pytest.mark.parametrize(
    "text",
    [
        "공유기 주소 192.168.0.1에 접속하세요.",
        "2024년 3월 15일에 업데이트되었습니다.",
        "비밀번호는 8자리 이상으로 정하세요.",
        "고객센터 운영 시간은 09:00-18:00입니다.",
        "배터리는 20~80% 사이로 유지하세요.",
        "모델명 SM-S921N 제품",
    ],
)
def test_ordinary_text_untouched(text):
    assert curation.find_pii(text) == [] and curation.mask_pii(text) == text


def test_find_pii_lists_kinds_in_order():
    text = "홍길동(900101-1234567), 010-2222-3333, gil@test.kr, 카드 1111-2222-3333-4444"
    kinds = [m.kind for m in curation.find_pii(text)]
    assert kinds == ["주민번호", "전화번호", "이메일", "카드번호"]
    assert curation.mask_pii(text) == "홍길동([주민번호]), [전화번호], [이메일], 카드 [카드번호]"


def test_mask_rows_counts_and_copies():
    rows = [row(0, "제 번호는 010-1234-5678이에요", "확인했습니다"), row(1, "메일 a@b.com", "a@b.com 으로 답장")]
    masked, counts = curation.mask_rows(rows)
    assert masked[0]["instruction"] == "제 번호는 [전화번호]이에요"
    assert masked[1]["output"] == "[이메일] 으로 답장"
    assert counts["전화번호"] == 1 and counts["이메일"] == 2 and counts["카드번호"] == 0
    assert rows[0]["instruction"].startswith("제 번호는 010")  # input untouched


def brute_force_pairs(rows, key, threshold):
    grams = [curation.char_ngrams(curation._key_text(r, key)) for r in rows]
    return [(i, j, curation.jaccard(grams[i], grams[j])) for i in range(len(rows)) for j in range(i + 1, len(rows))
            if curation.jaccard(grams[i], grams[j]) >= threshold]


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.9, 1.0])
def test_prefix_filter_finds_exactly_the_brute_force_pairs(threshold):
    import random

    rng = random.Random(threshold)
    words = ["공유기", "전원", "와이파이", "배터리", "화면", "충전", "어떻게", "하나요", "안", "돼요", "켜", "꺼"]
    rows = [row(i, " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))) for i in range(120)]
    assert curation.near_duplicate_pairs(rows, threshold=threshold) == brute_force_pairs(rows, "instruction", threshold)


def test_threshold_out_of_range():
    with pytest.raises(ValueError, match="threshold"):
        curation.near_duplicate_pairs([row(0, "a")], threshold=0)
