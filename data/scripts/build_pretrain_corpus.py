#!/usr/bin/env python3
"""Build the course's Korean pretraining corpus from hand-written templates.

The tiny Llama model and its byte-level BPE tokenizer are pretrained on this
corpus before any lab runs. It has two parts, both written for this course:

* ``text.txt``         general Korean prose, one paragraph per line;
* ``dialogues.jsonl``  customer-service dialogues on everyday (non-IT) topics,
                       half in a warm register and half in a curt register,
                       so that the DPO lab can later choose between two styles
                       the model can already produce (see ../shared/NOTES.md).

It also writes ``README.md``, the corpus card, with the statistics measured on
the output (sizes, register balance, exact and near duplicates).

Everything is generated with a fixed seed and the standard library only, so
the output is byte-identical on every run and on every platform, from:

* ``corpus_text/*.json``: the Korean word lists and sentences of each topic
  (names, dishes, animals, school events, the phrases of both registers ...),
  one JSON object per file, keyed by the constant name the templates use;
* ``corpus_text/dialogues/<topic>.json``: the customer-service domains, each
  exchange with its customer templates and the same answer in a warm and a curt
  register;
* this file: the templates (``p_*`` paragraph plans with ``{a|b}`` choices and
  ``[은/는]`` particle marks), the slot fillers (``slots_*``) and the assembly.

A writer who adds words or sentences edits the JSON files; rebuild and run
``tests/test_pretrain_corpus.py`` (the tiny model is trained on the output, so
any change to the corpus changes every lab's numbers).

Run it from the repository root::

    python data/scripts/build_pretrain_corpus.py              # writes data/pretrain/
    python data/scripts/build_pretrain_corpus.py --out /tmp/x # writes elsewhere

Measured on a shared 2-core CPU: about 3 s of CPU time (8 s wall clock under load).

No device tech-support content may appear here (routers, phones, printers and
the like): the fine-tuning labs teach those facts later, and the base model
must not know them. ``BANNED_TERMS`` lists the words the build refuses.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

SEED = 20261105
N_PARAGRAPHS = 1500          # paragraphs in text.txt
N_DIALOGUES = 3000           # dialogues in dialogues.jsonl
NEAR_DUP_THRESHOLD = 0.9     # character 3-gram Jaccard similarity
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "pretrain"

TEXT_DIR = Path(__file__).resolve().parent / "corpus_text"


def load_corpus_text(folder: Path = TEXT_DIR) -> dict:
    """Word lists and sentences of the corpus: ``corpus_text/*.json``, one file per topic.

    Each file maps a constant name of this script (``ANIMALS``, ``WARM_BYE`` ...) to a
    list or dict of Korean strings, so a writer edits text, not code; the templates
    that combine them stay in the ``p_*`` functions below. Names are unique across files.
    """
    text: dict = {}
    for path in sorted(folder.glob("*.json")):
        for name, value in json.loads(path.read_text(encoding="utf-8")).items():
            if name in text:
                raise ValueError(f"{path}: {name!r} is already defined in another corpus_text file")
            text[name] = value
    return text


def _rows(items: list) -> list[tuple]:
    """JSON arrays of records (``[["고양이", [...]], ...]``) as the tuples the templates unpack."""
    return [tuple(item) for item in items]


def load_domain(topic: str, slots, folder: Path = TEXT_DIR / "dialogues") -> dict:
    """One customer-service domain from ``corpus_text/dialogues/<topic>.json`` with its slot filler.

    The file holds ``topic``, ``intents`` and ``followups``; every exchange has customer
    templates (``user``) and the same answer in both registers (``warm``, ``curt``), plus
    ``mood``, ``follow``, ``yes`` (and ``warm_short`` for follow-ups).
    """
    domain = json.loads((folder / f"{topic}.json").read_text(encoding="utf-8"))
    if domain.get("topic") != topic:
        raise ValueError(f"{folder / topic}.json: topic is {domain.get('topic')!r}, expected {topic!r}")
    return {"topic": topic, "slots": slots, "intents": domain["intents"], "followups": domain["followups"]}


TEXT = load_corpus_text()


# Words that would leak device tech-support knowledge into the base model.
# The build fails if any of them appears (tests/test_pretrain_corpus.py checks
# the committed files against the same kind of list).
BANNED_TERMS = (
    "공유기", "와이파이", "wi-fi", "wifi", "블루투스", "bluetooth", "프린터", "printer",
    "스마트폰", "smartphone", "휴대폰", "핸드폰", "노트북", "laptop", "재부팅", "reboot",
    "펌웨어", "firmware", "라우터", "router", "이어폰", "리모컨", "이메일", "e-mail",
    "email", "메일", "앱", "어플", "비밀번호", "password", "컴퓨터", "태블릿", "충전",
    "배터리", "인터넷", "로그인", "업데이트", "다운로드", "설치", "모니터", "키보드",
    "마우스", "usb", "tv", "텔레비전", "모뎀", "카메라", "스피커", "전원", "와이fi",
    "데이터", "화면", "문자 메시지", "카톡", "메신저", "소프트웨어", "드라이버",
)


# ---------------------------------------------------------------------------
# Korean particles (josa)
# ---------------------------------------------------------------------------

_HANGUL_BASE, _HANGUL_LAST = 0xAC00, 0xD7A3
_RIEUL = 8                       # index of the final consonant ㄹ
# Reading of a final digit: 0 영, 1 일, 2 이, 3 삼, 4 사, 5 오, 6 육, 7 칠, 8 팔, 9 구
_DIGIT_FINAL = {"0": "ㅇ", "1": "ㄹ", "2": "", "3": "ㅁ", "4": "", "5": "",
                "6": "ㄱ", "7": "ㄹ", "8": "ㄹ", "9": ""}
# Trailing zeros: 10 십, 100 백, 1000 천, 10000 만
_ZEROS_FINAL = {1: "ㅂ", 2: "ㄱ", 3: "ㄴ", 4: "ㄴ"}


def final_consonant(word: str) -> str:
    """Return the final consonant (batchim) of the last syllable of ``word``.

    '' means the word ends in a vowel. Trailing spaces, quotes and closing
    brackets are skipped; Arabic numerals are read as Sino-Korean numbers.
    """
    word = word.rstrip(" '\"’”)]」』")
    if not word:
        return ""
    ch = word[-1]
    code = ord(ch)
    if _HANGUL_BASE <= code <= _HANGUL_LAST:
        index = (code - _HANGUL_BASE) % 28
        if index == 0:
            return ""
        return "ㄹ" if index == _RIEUL else "ㄱ"  # only ㄹ versus others matters
    if ch.isdigit():
        digits = re.search(r"\d+$", word).group()
        stripped = digits.rstrip("0")
        zeros = len(digits) - len(stripped)
        if zeros:
            return _ZEROS_FINAL.get(min(zeros, 4), "ㄴ")
        return _DIGIT_FINAL[ch]
    return ""


def josa(word: str, with_final: str, without_final: str) -> str:
    """Pick the particle form that fits ``word``: josa('책', '을', '를') -> '을'.

    For 으로/로 a final ㄹ takes 로 (칼로, 서울로), as in standard Korean.
    """
    final = final_consonant(word)
    if with_final.startswith("으로") and final == "ㄹ":
        return without_final
    return with_final if final else without_final


_JOSA_MARK = re.compile(r"\[([^\[\]/]*)/([^\[\]/]*)\]")


def resolve_josa(text: str) -> str:
    """Replace every marker like ``[이/가]`` with the form that fits the word before it."""
    out = []
    pos = 0
    for m in _JOSA_MARK.finditer(text):
        out.append(text[pos:m.start()])
        before = "".join(out)
        out.append(josa(before, m.group(1), m.group(2)))
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


# ---------------------------------------------------------------------------
# Templates: {slot}, {a|b|c} (choice, may be empty: {a|}), [이/가] (particle)
# ---------------------------------------------------------------------------

_BRACES = re.compile(r"\{([^{}]*)\}")


def fill(rng: random.Random, template: str, **slots: str) -> str:
    """Expand a template: slots and choices innermost first, then particles."""
    def expand(m: re.Match) -> str:
        body = m.group(1)
        if "|" in body:
            return rng.choice(body.split("|"))
        if body not in slots:
            raise KeyError(f"template slot {body!r} missing in: {template}")
        return slots[body]

    text = template
    while "{" in text:
        new = _BRACES.sub(expand, text)
        if new == text:
            raise ValueError(f"unbalanced braces in template: {template}")
        text = new
    text = resolve_josa(text)
    return re.sub(r"  +", " ", text).strip()


def ordered_subset(rng: random.Random, items, k: int):
    """k items drawn at random, kept in their written order (so the text stays coherent)."""
    keep = set(rng.sample(range(len(items)), k))
    return [x for i, x in enumerate(items) if i in keep]


def reported(clause: str) -> str:
    """Indirect speech of a plain statement: '…곳이다' -> '…곳이라고 한다', '…아름답다' -> '…아름답다고 한다'."""
    if clause.endswith("이다"):
        return clause[:-2] + "이라고 한다"
    if clause.endswith("다"):
        return clause + "고 한다"
    raise ValueError(f"not a plain statement: {clause}")


def pick(rng: random.Random, items):
    return items[rng.randrange(len(items))]


def sample(rng: random.Random, items, k: int):
    return rng.sample(list(items), k)


NAMES = TEXT["NAMES"]  # corpus_text/people.json


# ===========================================================================
# Part 1: general prose (text.txt)
# ===========================================================================
# Each topic has entity tables (true, checkable facts) and paragraph plans.
# A plan returns 3-6 related sentences about one subject.

# --- seasons and weather ----------------------------------------------------

SEASONS = {season: {key: _rows(value) if key == "acts" else value for key, value in fields.items()} for season, fields in TEXT["SEASONS"].items()}  # corpus_text/seasons_and_weather.json

TIME_OPENERS = TEXT["TIME_OPENERS"]  # corpus_text/seasons_and_weather.json
COMPANIONS = TEXT["COMPANIONS"]  # corpus_text/seasons_and_weather.json


def p_season_overview(r):
    s = pick(r, list(SEASONS))
    d = SEASONS[s]
    w1, w2 = sample(r, d["weather"], 2)
    n1, n2 = sample(r, d["nature"], 2)
    a1, a2 = sample(r, d["acts"], 2)
    f1, f2 = sample(r, d["foods"], 2)
    out = [fill(r, "{우리나라에서 |}{season}[은/는] {보통|대체로|흔히} {months}[이다/다].", season=s, months=d["months"])]
    if r.random() < 0.5:
        out.append(fill(r, "{이 무렵에는|이 계절에는|이맘때면} {w}.", w=w1))
    else:
        out.append(fill(r, "{w1}. {또한|그리고|한편} {w2}.", w1=w1, w2=w2))
    out.append(fill(r, "{자연에서는|밖에 나가 보면|산과 들에서는} {n}.", n=n1))
    if r.random() < 0.5:
        out.append(fill(r, "{season}에는 {a} 사람들이 {많다|늘어난다|눈에 띈다}.", season=s, a=a1[0]))
    else:
        out.append(fill(r, "{season}[은/는] {a} 좋은 {계절이다|때다}.", season=s, a=a2[1]))
    out.append(fill(r, "{이 계절에 맛볼 수 있는 음식으로는|제철 먹을거리로는} {f1}[과/와] {f2}[이/가] {있다|대표적이다}.", f1=f1, f2=f2))
    if r.random() < 0.35:
        out.append(fill(r, "{밖에 나갈 때는|외출할 때는} {clothes}[을/를] {챙기면 좋다|챙기는 것이 좋다}.", clothes=pick(r, d["clothes"])))
    if r.random() < 0.6:
        out.append(fill(r, "{계절마다 다른 즐거움이 있지만|사계절이 뚜렷한 덕분에} {season}에는 {season}만의 {feel}[이/가] 있다.",
                        season=s, feel=d["feel"]))
    return out


def p_season_story(r):
    s = pick(r, list(SEASONS))
    d = SEASONS[s]
    name = pick(r, NAMES)
    comp = pick(r, COMPANIONS)
    place = pick(r, d["places"])
    sc1, sc2 = sample(r, SCENES[s], 2)
    out = [fill(r, "{when} {name}[은/는] {comp}[과/와] 함께 {place}에 {갔다|다녀왔다|놀러 갔다}.",
                when=pick(r, TIME_OPENERS), name=name, comp=comp, place=place)]
    out.append(fill(r, "{도착해 보니|그곳에 가 보니|가는 길부터} {sc}.", sc=sc1))
    if r.random() < 0.6:
        out.append(fill(r, "{조금 더 걸어가자|한쪽에서는|고개를 들어 보니} {sc}.", sc=sc2))
    out.append(fill(r, "{name}[은/는] {그 모습을 보며|잠시 걸음을 멈추고} {season}[이/가] {왔다는 것을|한창이라는 것을} {느꼈다|실감했다}.",
                    name=name, season=s))
    out.append(fill(r, "{잠시 쉬는 동안|돌아오기 전에} {food}[을/를] {나누어 먹었다|사 먹었다|맛보았다}.", food=pick(r, d["foods"])))
    if r.random() < 0.7:
        out.append(fill(r, "{집에 돌아오는 길에|해가 질 무렵} {name}[은/는] {다음에도 또 오자고 약속했다|오늘 본 풍경을 일기에 적어 두기로 했다|{comp}에게 같이 와 줘서 고맙다고 말했다}.",
                        name=name, comp=comp))
    return out


SCENES = TEXT["SCENES"]  # corpus_text/seasons_and_weather.json


# Weather phenomena: each entry is a question and explanation sentences that
# are true as written; variants are alternative phrasings of the same fact.
WEATHER_FACTS = _rows(TEXT["WEATHER_FACTS"])  # corpus_text/seasons_and_weather.json


def p_weather_fact(r):
    _, question, sents = pick(r, WEATHER_FACTS)
    out = [fill(r, question)]
    chosen = sents[:] if r.random() < 0.5 else [s for s in sents if r.random() < 0.8] or sents[:2]
    out.extend(fill(r, s) for s in chosen)
    return out


WEATHER_TODAY = _rows(TEXT["WEATHER_TODAY"])  # corpus_text/seasons_and_weather.json


def p_weather_diary(r):
    _, s1, s2 = pick(r, WEATHER_TODAY)
    name = pick(r, NAMES)
    out = [fill(r, "{오늘은|그날은} {s1}.", s1=s1), fill(r, s2 + ".")]
    out.append(fill(r, "{name}[은/는] {날씨에 맞게 옷을 고르고|일기 예보를 미리 확인하고} {집을 나섰다|학교에 갔다|시장에 다녀왔다}.", name=name))
    out.append(fill(r, "{날씨는|하늘은} 우리가 어떻게 할 수 없지만, {미리 준비하면|조금만 신경 쓰면} {하루를 한결 편하게 보낼 수 있다|불편을 훨씬 줄일 수 있다}."))
    if r.random() < 0.5:
        out.append(fill(r, "{내일은|주말에는} 날씨가 {좋아졌으면|맑았으면} {좋겠다|하는 바람이 들었다}."))
    return out


# --- cooking and food -------------------------------------------------------

DISHES = TEXT["DISHES"]  # corpus_text/cooking_and_food.json



def _ing_phrase(r, ing, k):
    items = [ing[0]] + sample(r, ing[1:], min(k, len(ing)) - 1)   # the main ingredient always
    if len(items) == 1:
        return items[0]
    head = ", ".join(items[:-1])
    return fill(r, "{head}[과/와] {last}", head=head, last=items[-1])


def p_dish(r):
    d = pick(r, DISHES)
    out = [fill(r, "{n}[은/는] {우리나라 사람들이 즐겨 먹는|많은 사람이 좋아하는|집에서도 어렵지 않게 만들 수 있는} {음식이다|요리이다}.", n=d["n"])]
    out.append(fill(r, "{주재료는 {ings}[이다/다].|{n}에는 주로 {ings}[이/가] 들어간다.|{ings}[을/를] 준비하면 만들 수 있다.}",
                    n=d["n"], ings=_ing_phrase(r, d["ing"], r.randint(2, 4))))
    out.append(fill(r, "{맛은 {taste} 편이다|한 숟가락 떠 보면 {taste} 맛이 난다|{taste} 맛이 이 음식의 매력이다}.", taste=d["taste"]))
    out.append(fill(r, d["note"] + "."))
    if r.random() < 0.6:
        out.append(fill(r, "{밥 한 공기와 김치만 곁들여도 훌륭한 한 끼가 된다|간단한 반찬 몇 가지만 있어도 든든한 식사가 된다|가족이 둘러앉아 먹으면 더욱 맛있다}."))
    return out


RECIPES = TEXT["RECIPES"]  # corpus_text/cooking_and_food.json
STEP_LINKS = TEXT["STEP_LINKS"]  # corpus_text/cooking_and_food.json


def p_recipe(r):
    dish = pick(r, list(RECIPES))
    steps = RECIPES[dish]
    out = [fill(r, "{오늘은 집에서 {dish}[을/를] 만들어 보자.|{dish} 만드는 법을 차례대로 정리해 보았다.|{dish}[은/는] 생각보다 만들기 쉬운 음식이다.|집에서 {dish}[을/를] 만드는 방법은 {간단하다|어렵지 않다}.}", dish=dish)]
    link = ""
    for i, step in enumerate(steps):
        if step.startswith("~"):
            link, step = "", step[1:]
        else:
            link = "" if i == 0 or step.startswith(("마지막", "{먼저")) else pick(r, [x for x in STEP_LINKS if not x or x != link])
        out.append(fill(r, link + step + "."))
    if r.random() < 0.6:
        out.append(fill(r, "{간은|양념은} {마지막에 맛을 보면서 맞추는 것이 좋다|한 번에 많이 넣지 말고 조금씩 더하는 편이 낫다|몇 번 만들다 보면 자기 입맛에 맞게 조절할 수 있다}."))
    return out


FAMILY_COOKS = TEXT["FAMILY_COOKS"]  # corpus_text/cooking_and_food.json


def p_cooking_story(r):
    d = pick(r, DISHES)
    name, cook = pick(r, NAMES), pick(r, FAMILY_COOKS)
    out = [fill(r, "{when} {name}[은/는] {cook}[과/와] 함께 {dish}[을/를] {만들었다|만들어 보았다}.",
                when=pick(r, TIME_OPENERS), name=name, cook=cook, dish=d["n"])]
    out.append(fill(r, "{cook}[이/가] {재료를 손질하는 동안|불 앞에서 냄비를 지키는 동안} {name}[은/는] {채소를 씻었다|그릇을 꺼내 상을 차렸다|필요한 양념을 꺼내 놓았다}.",
                    cook=cook, name=name))
    out.append(fill(r, "{처음 해 보는 일이라|아직 서툴러서} {손이 느렸지만|실수도 했지만} {cook}[이/가] {옆에서 차근차근 알려 주었다|천천히 해도 괜찮다며 기다려 주었다}.", cook=cook))
    out.append(fill(r, "{완성된|갓 만든} {dish}[은/는] {taste} 맛이 {났다|일품이었다}.", dish=d["n"], taste=d["taste"]))
    if r.random() < 0.7:
        out.append(fill(r, "{name}[은/는] {다음에는 혼자서도 만들어 보겠다고 다짐했다|만드는 순서를 공책에 적어 두었다|가족들이 맛있게 먹는 모습을 보며 뿌듯해했다}.", name=name))
    return out


KITCHEN_RULES = TEXT["KITCHEN_RULES"]  # corpus_text/cooking_and_food.json


def p_kitchen_rules(r):
    rules = sample(r, KITCHEN_RULES, r.randint(3, 4))
    out = [fill(r, "{부엌에서는|요리를 할 때는} {꼭 지켜야 할|알아 두면 좋은} {기본 수칙이|안전과 위생 습관이} {있다|몇 가지 있다}.")]
    links = ["{먼저|첫째로} ", "{또|그리고} ", "{또한|아울러} ", "{마지막으로|끝으로} "]
    for i, rule in enumerate(rules):
        link = links[min(i, 2)] if i < len(rules) - 1 else links[3]
        out.append(fill(r, link + rule + "."))
    if r.random() < 0.5:
        out.append(fill(r, "{작은 습관이지만|사소해 보여도} 이런 것들을 지키면 {맛있고 안전하게|건강하게} 요리할 수 있다."))
    return out


# --- school life ------------------------------------------------------------

GRADES = TEXT["GRADES"]  # corpus_text/school_life.json
SUBJECT_ACTS = TEXT["SUBJECT_ACTS"]  # corpus_text/school_life.json
LUNCHES = TEXT["LUNCHES"]  # corpus_text/school_life.json
AFTER_SCHOOL = TEXT["AFTER_SCHOOL"]  # corpus_text/school_life.json
REACTIONS = TEXT["REACTIONS"]  # corpus_text/school_life.json


def p_school_day(r):
    name = pick(r, NAMES)
    s1, s2 = sample(r, list(SUBJECT_ACTS), 2)
    out = [fill(r, "{name}[은/는] {grade} 학생이다.", name=name, grade=pick(r, GRADES))
           if r.random() < 0.5 else
           fill(r, "{오늘|월요일|화요일|수요일|목요일|금요일} {name}네 반은 {n}교시에 {subj} 수업이 있었다.",
                name=name, n=pick(r, ["1", "2", "3", "4", "5"]), subj=s1)]
    out.append(fill(r, "{subj} 시간에는 {act}.", subj=s1, act=pick(r, SUBJECT_ACTS[s1])))
    out.append(fill(r, "{react}.", react=pick(r, REACTIONS)))
    if r.random() < 0.5:
        out.append(fill(r, "{이어진|다음} {subj} 시간에는 {act}.", subj=s2, act=pick(r, SUBJECT_ACTS[s2])))
    out.append(fill(r, "점심시간에는 급식으로 {food}[이/가] {나왔다|나와서 모두 맛있게 먹었다}.", food=pick(r, LUNCHES)))
    out.append(fill(r, "수업이 끝난 뒤에 {name}[은/는] {after}.", name=name, after=pick(r, AFTER_SCHOOL)))
    return out


SCHOOL_EVENTS = _rows(TEXT["SCHOOL_EVENTS"])  # corpus_text/school_life.json


def p_school_event(r):
    _, sents = pick(r, SCHOOL_EVENTS)
    name = pick(r, NAMES)
    return [fill(r, s, name=name) for s in sents]


STUDY_TIPS = TEXT["STUDY_TIPS"]  # corpus_text/school_life.json


def p_study_tips(r):
    tips = sample(r, STUDY_TIPS, r.randint(3, 4))
    out = [fill(r, "{공부를 잘하는 데에는|좋은 공부 습관을 만드는 데에는} {특별한 비법보다|타고난 재능보다} {작은 습관이|꾸준함이} 더 중요하다.")]
    links = ["{먼저|우선} ", "{또|그리고} ", "{또한|게다가} ", "{무엇보다|마지막으로} "]
    for i, tip in enumerate(tips):
        out.append(fill(r, (links[min(i, 2)] if i < len(tips) - 1 else links[3]) + tip + "."))
    if r.random() < 0.5:
        out.append(fill(r, "{이런 습관은|처음에는 귀찮아도 이런 습관은} {하루아침에 생기지 않지만|금방 눈에 띄는 효과는 없지만} {꾸준히 하면 분명히 도움이 된다|쌓이면 큰 힘이 된다}."))
    return out


PROJECTS = TEXT["PROJECTS"]  # corpus_text/school_life.json


def p_group_work(r):
    a, b, c = sample(r, NAMES, 3)
    proj = pick(r, PROJECTS)
    out = [fill(r, "{a}, {b}, {c}[은/는] 같은 모둠이 되어 {proj}[을/를] {준비했다|함께 맡았다}.", a=a, b=b, c=c, proj=proj)]
    out.append(fill(r, "처음에는 {서로 하고 싶은 부분이 달라서|의견이 엇갈려서} {회의가 길어졌다|한참 동안 이야기만 오갔다}."))
    out.append(fill(r, "{그때 {a}[이/가] 각자 잘하는 일을 나누어 맡자고 제안했다.|{결국|의논 끝에|한참 뒤} 셋은 {각자 잘하는 일을 나누어 맡기로 했다|저마다 잘하는 일을 하나씩 맡기로 했다|역할을 골고루 나누기로 했다}.}", a=a))
    out.append(fill(r, "{b}[은/는] {자료를 찾고|글을 쓰고}, {c}[은/는] {그림을 그렸다|발표를 맡았다}.", b=b, c=c))
    out.append(fill(r, "{완성된 결과물을 보며|발표를 마친 뒤} 셋은 {함께 하면 혼자서는 못 할 일도 해낼 수 있다는 것을 배웠다|서로에게 수고했다고 말해 주었다}."))
    return out


# --- sports and hobbies -----------------------------------------------------

SPORTS = TEXT["SPORTS"]  # corpus_text/sports_and_hobbies.json
SOLO_SPORTS = _rows(TEXT["SOLO_SPORTS"])  # corpus_text/sports_and_hobbies.json


def p_team_sport(r):
    d = pick(r, SPORTS)
    out = [fill(r, "{n}[은/는] {how} {경기이다|운동이다|구기 종목이다}.", n=d["n"], how=d["how"])]
    out.append(fill(r, d["team"] + "."))
    out.append(fill(r, "{기본 규칙 가운데 하나는|처음 배울 때 꼭 알아야 할 규칙은} {rule}는 것이다.", rule=d["rule"]))
    if r.random() < 0.6:
        out.append(fill(r, "{준비물로는 {gear}[이/가] 필요하다|필요한 도구는 {gear}[이다/다]}.", gear=d["gear"]))
    out.append(fill(r, "{n}[을/를] {꾸준히 하면|즐기다 보면} {good}.", n=d["n"], good=d["good"]))
    return out


def p_solo_sport(r):
    n, facts = pick(r, SOLO_SPORTS)
    chosen = ordered_subset(r, facts, r.randint(3, 4))
    out = [fill(r, "{요즘 {n}[을/를] 시작하는 사람이 많다.|{n}[은/는] 나이와 상관없이 즐길 수 있는 운동이다.|{n}에 대해 알아보자.}", n=n)]
    out.extend(fill(r, f + ".") for f in chosen)
    if r.random() < 0.5:
        out.append(fill(r, "{어떤 운동이든|무슨 운동을 하든} {무리하지 말고 자기 몸 상태에 맞게 하는 것이 가장 중요하다|즐겁게 오래 하는 것이 가장 좋은 방법이다}."))
    return out


HOBBIES = _rows(TEXT["HOBBIES"])  # corpus_text/sports_and_hobbies.json
HOBBY_FEELINGS = TEXT["HOBBY_FEELINGS"]  # corpus_text/sports_and_hobbies.json


def p_hobby(r):
    hobby, habit, details = pick(r, HOBBIES)
    name = pick(r, NAMES + ["우리 할머니", "우리 아빠", "옆집 아저씨", "우리 이모"])
    out = [fill(r, "{name}의 취미는 {hobby}[이다/다].", name=name, hobby=hobby)]
    out.append(fill(r, "{name}[은/는] {habit}.", name=name, habit=habit))
    out.extend(fill(r, d + ".") for d in ordered_subset(r, details, r.randint(2, 3)))
    out.append(fill(r, "{hobby}[을/를] {하고 있으면|하는 동안에는} {feel}{고 한다|}.", hobby=hobby, feel=pick(r, HOBBY_FEELINGS)))
    return out


WARMUP = TEXT["WARMUP"]  # corpus_text/sports_and_hobbies.json


def p_exercise_safety(r):
    rules = sample(r, WARMUP, r.randint(3, 4))
    out = [fill(r, "{운동은|몸을 움직이는 일은} {건강에 좋지만|몸과 마음을 튼튼하게 해 주지만}, {잘못하면 다칠 수도 있다|안전하게 하는 것이 먼저다}.")]
    out.extend(fill(r, ru + ".") for ru in rules)
    out.append(fill(r, "{이 몇 가지만 지켜도|기본만 잘 지켜도} {오래도록 즐겁게 운동할 수 있다|다칠 위험을 크게 줄일 수 있다}."))
    return out


# --- nature and animals -----------------------------------------------------

ANIMALS = _rows(TEXT["ANIMALS"])  # corpus_text/nature_and_animals.json
OBSERVABLE = _rows(TEXT["OBSERVABLE"])  # corpus_text/nature_and_animals.json


def p_animal(r):
    n, facts = pick(r, ANIMALS)
    chosen = facts[:1] + ordered_subset(r, facts[1:], r.randint(2, len(facts) - 1))
    out = [fill(r, f + ".") for f in chosen]
    if r.random() < 0.4:
        out.insert(0, fill(r, "{n}[은/는] {어떤 동물일까|어떻게 살아갈까}?", n=n))
    if r.random() < 0.5:
        out.append(fill(r, "{이렇게|이처럼} 동물들은 {저마다의 방식으로|자기에게 맞는 방법으로} {환경에 적응하며 살아간다|살아남는다}."))
    return out


def p_observe(r):
    name = pick(r, NAMES)
    animal, act, places = pick(r, OBSERVABLE)
    place = pick(r, places)
    out = [fill(r, "{when} {name}[은/는] {place}에서 {animal} {한 마리를|몇 마리를} 보았다.",
                when=pick(r, TIME_OPENERS), name=name, place=place, animal=animal)]
    out.append(fill(r, "{animal}[은/는] {act}.", animal=animal, act=act))
    out.append(fill(r, "{name}[은/는] {숨을 죽이고|한참 동안 쪼그려 앉아} {그 모습을 지켜보았다|눈을 떼지 못했다}.", name=name))
    out.append(fill(r, "{집에 돌아와서는|저녁에는} {도감을 펼쳐|도서관에서 빌린 책으로} {animal}에 대해 더 찾아보았다.", animal=animal))
    if r.random() < 0.6:
        out.append(fill(r, "{가까운 곳에도|매일 지나다니던 길에도} {이렇게 많은 생명이 살고 있다는 것이|이런 생명이 함께 살고 있다는 것이} {신기했다|새삼 놀라웠다}."))
    return out


PLANTS = _rows(TEXT["PLANTS"])  # corpus_text/nature_and_animals.json


def p_plant(r):
    n, facts = pick(r, PLANTS)
    chosen = facts[:1] + ordered_subset(r, facts[1:], r.randint(2, len(facts) - 1))
    out = [fill(r, f + ".") for f in chosen]
    if r.random() < 0.5:
        out.append(fill(r, "{길을 걷다가|산책하다가} {n}[을/를] 만나면 {한번 자세히 들여다보자|이런 특징을 떠올려 보자}.", n=n))
    return out


ECO_SENTENCES = _rows(TEXT["ECO_SENTENCES"])  # corpus_text/nature_and_animals.json


def p_ecosystem(r):
    _, sents = pick(r, ECO_SENTENCES)
    keep = [s.lstrip("?") for s in sents if not s.startswith("?") or r.random() < 0.6]
    if len(keep) < 3:
        keep = [s.lstrip("?") for s in sents]
    return [fill(r, s + ".") for s in keep]


# --- travel within Korea ----------------------------------------------------

PLACES = TEXT["PLACES"]  # corpus_text/travel_within_korea.json
TRANSPORT = TEXT["TRANSPORT"]  # corpus_text/travel_within_korea.json
TRIP_REACT = TEXT["TRIP_REACT"]  # corpus_text/travel_within_korea.json


def p_place(r):
    d = pick(r, PLACES)
    facts = ordered_subset(r, d["facts"], min(len(d["facts"]), r.randint(2, 4)))
    out = [fill(r, "{n}[은/는] {where}[이다/다].", n=d["n"], where=d["where"])]
    out.extend(fill(r, f + ".") for f in facts)
    out.append(fill(r, "{n}에 가면 {f1}[을/를] {꼭 맛보자|맛보는 것도 잊지 말자|먹어 보기를 권한다}.", n=d["n"], f1=pick(r, d["foods"])))
    return out


def p_trip(r):
    d = pick(r, PLACES)
    name = pick(r, NAMES)
    who = pick(r, ["{name}네 가족은", "{name}[은/는] 친구들과", "{name}[은/는] 할머니를 모시고", "{name}[은/는] 혼자"])
    s1, s2 = sample(r, d["spots"], 2)
    tr = pick(r, TRANSPORT)
    ride = "기차" if ("기차" in tr or "KTX" in tr) else "버스" if "버스" in tr else "차"
    out = [fill(r, "{when} " + who + " {tr} {n}[으로/로] {여행을 떠났다|여행을 다녀왔다}.",
                when=pick(r, TIME_OPENERS + ["지난여름", "지난봄", "지난가을", "겨울 방학"]), name=name, tr=tr, n=d["n"])]
    out.append(fill(r, "{첫날에는|도착하자마자} {s1}[을/를] {찾았다|둘러보았다}.", s1=s1))
    out.append(fill(r, "{react}.", react=pick(r, TRIP_REACT)))
    out.append(fill(r, "{다음 날에는|이튿날에는|오후에는} {s2}에 {들렀다|가 보았다}.", s2=s2))
    if r.random() < 0.6:
        out.append(fill(r, "{미리 찾아본 바로는|안내문에 따르면} {fact}.", fact=reported(pick(r, d["facts"]))))
    out.append(fill(r, "{저녁에는|여행 마지막 날에는} {n}의 {이름난 음식인|별미인} {food}[을/를] {먹었다|맛보았다}.", n=d["n"], food=pick(r, d["foods"])))
    if r.random() < 0.5:
        out.append(fill(r, "{집으로 돌아오는 길|돌아오는 {ride} 안}에서 {name}[은/는] {다음 여행지를 벌써 고르고 있었다|눈에 담아 둔 풍경을 떠올리며 미소를 지었다|여행 일기를 썼다}.", name=name, ride=ride))
    return out


TRAVEL_TIPS = TEXT["TRAVEL_TIPS"]  # corpus_text/travel_within_korea.json


def p_travel_tips(r):
    tips = sample(r, TRAVEL_TIPS, r.randint(3, 4))
    out = [fill(r, "{즐거운 여행을 위해|여행을 더 알차게 보내려면} {몇 가지 챙길 것이 있다|알아 두면 좋은 것들이 있다}.")]
    links = ["{먼저|우선} ", "{또|그리고} ", "{또한|아울러} ", "{끝으로|마지막으로} "]
    for i, t in enumerate(tips):
        out.append(fill(r, (links[min(i, 2)] if i < len(tips) - 1 else links[3]) + t + "."))
    return out


# --- simple science ---------------------------------------------------------
# (question, [explanation sentences in order], [examples], [conclusions]); every
# statement is true at the level of a school textbook.

SCIENCE = _rows(TEXT["SCIENCE"])  # corpus_text/simple_science.json


def p_science(r):
    question, expl, examples, concl = pick(r, SCIENCE)
    out = []
    if r.random() < 0.7:
        out.append(fill(r, question))
    out.extend(fill(r, s) for s in expl)
    out.append(fill(r, pick(r, examples)))
    if r.random() < 0.6 or len(out) < 4:
        out.append(fill(r, pick(r, concl)))
    return out


# Explanations for younger readers, in the polite 해요체.
SCIENCE_KIDS = TEXT["SCIENCE_KIDS"]  # corpus_text/simple_science.json


def p_science_kids(r):
    sents = pick(r, SCIENCE_KIDS)
    out = [fill(r, s) for s in sents]
    if r.random() < 0.5:
        out.append(fill(r, "{자연에는|우리 주변에는} {신기한 일이 참 많지요?|궁금한 것이 정말 많아요.|재미있는 비밀이 가득해요.}"))
    return out


# --- health habits ----------------------------------------------------------
# General everyday habits only; no medical advice.

HABITS = _rows(TEXT["HABITS"])  # corpus_text/health_habits.json


def p_habit(r):
    n, body, close = pick(r, HABITS)
    out = [fill(r, "{건강을 지키는 좋은 습관 가운데 하나는 {n}[이다/다].|몸을 튼튼하게 하는 생활 습관으로 {n}[이/가] {있다|꼽힌다}.}", n=n)
           if r.random() < 0.5 else fill(r, "{n}[은/는] {간단하지만|쉬워 보여도} {건강에 아주 중요하다|꾸준히 하기가 생각보다 어렵다}.", n=n)]
    chosen = [s for i, s in enumerate(body) if i == 0 or r.random() < 0.8]
    out.extend(fill(r, s + ".") for s in chosen)
    out.append(fill(r, close + "."))
    return out


def p_habit_story(r):
    n, body, close = pick(r, HABITS)
    name = pick(r, NAMES + ["우리 아빠", "우리 엄마", "삼촌", "할아버지"])
    out = [fill(r, "{name}[은/는] {올해|새 학기부터|지난달부터} {n}[을/를] {꾸준히 실천하기로|매일 챙기기로} {마음먹었다|결심했다}.", name=name, n=n)]
    out.append(fill(r, "{처음 며칠은|처음에는} {자꾸 잊어버려서|귀찮기도 해서} {달력에 표시를 하며 스스로를 다잡았다|냉장고 문에 쪽지를 붙여 두었다}."))
    out.append(fill(r, "{알아보니|책에서 찾아보니} {fact}.", fact=reported(fill(r, close))))
    out.append(fill(r, "{한 달쯤 지나자|몇 주가 지나자} {몸이 한결 가벼워진 것 같았다|이제는 하지 않으면 오히려 어색할 정도가 되었다|가족들도 하나둘 따라 하기 시작했다}."))
    if r.random() < 0.5:
        out.append(fill(r, "{name}[은/는] {작은 습관이 쌓이면 큰 변화가 된다는 것을 알게 되었다|다음에는 또 어떤 습관을 만들지 고민하고 있다}.", name=name))
    return out


# --- reading and libraries --------------------------------------------------

LIBRARY_RULES = TEXT["LIBRARY_RULES"]  # corpus_text/reading_and_libraries.json


def p_library_guide(r):
    rules = ordered_subset(r, LIBRARY_RULES, r.randint(3, 5))
    out = [fill(r, "{도서관은|공공 도서관은} {누구나 무료로 책을 읽고 빌릴 수 있는|책과 사람이 만나는} {곳이다|고마운 공간이다}.")]
    out.extend(fill(r, ru + ".") for ru in rules)
    if r.random() < 0.5:
        out.append(fill(r, "{몇 가지 약속만 지키면|기본적인 규칙만 알아 두면} 도서관을 {훨씬 편하게|더 알차게} 이용할 수 있다."))
    return out


KDC = _rows(TEXT["KDC"])  # corpus_text/reading_and_libraries.json
KDC_EX = TEXT["KDC_EX"]  # corpus_text/reading_and_libraries.json


def p_library_kdc(r):
    code, subj = pick(r, [k for k in KDC if k[0] in KDC_EX])
    out = [fill(r, "{우리나라 도서관|우리나라의 많은 도서관}에서는 한국십진분류법에 따라 책을 {정리한다|분류해 꽂아 둔다}.")]
    out.append(fill(r, "이 방법은 모든 책을 주제에 따라 000부터 900까지 열 개의 큰 무리로 나눈다."))
    a, b, c = sorted(sample(r, [k for k in KDC if k[0] != code], 2) + [(code, subj)])
    out.append(fill(r, "예를 들어 {a}번대는 {asub}, {b}번대는 {bsub}, {c}번대는 {csub} 분야이다.",
                    a=a[0], asub=a[1], b=b[0], bsub=b[1], c=c[0], csub=c[1]))
    out.append(fill(r, "{그래서|따라서} {ex}[을/를] 찾고 싶다면 {c}번대 책장으로 가면 된다.", ex=KDC_EX[code], c=code))
    out.append(fill(r, "책등에 붙은 청구기호를 보면 {그 책이 꽂힌 자리를 알 수 있다|책장 어디에 있는지 찾을 수 있다}."))
    return out


FOLKTALES = _rows(TEXT["FOLKTALES"])  # corpus_text/reading_and_libraries.json


def p_folktale(r):
    title, plot, moral = pick(r, FOLKTALES)
    out = [fill(r, "{어릴 때 누구나 한 번쯤 들어 보았을|오래전부터 전해 오는|할머니가 자주 들려주시던} 이야기로 「{t}」[이/가] 있다.", t=title)
           if r.random() < 0.6 else fill(r, "「{t}」[은/는] {우리나라 사람이라면 대부분 아는|오래 사랑받아 온} 이야기이다.", t=title)]
    out.extend(fill(r, p + ".") for p in plot)
    out.append(fill(r, "이 이야기는 {moral}는 {교훈을 준다|것을 일깨워 준다}.", moral=moral))
    return out


BOOK_KINDS = TEXT["BOOK_KINDS"]  # corpus_text/reading_and_libraries.json
READING_BENEFITS = TEXT["READING_BENEFITS"]  # corpus_text/reading_and_libraries.json


def p_reading(r):
    name = pick(r, NAMES)
    k1, k2 = sample(r, BOOK_KINDS, 2)
    out = [fill(r, "{name}[은/는] {일주일에 한 번|토요일마다|방과 후에 자주} 동네 도서관에 {간다|들른다}.", name=name)]
    out.append(fill(r, "{요즘은|이번 달에는} 주로 {k1}[을/를] 빌려 읽고, {가끔은|시간이 나면} {k2}도 {들춰 본다|함께 읽는다}.", k1=k1, k2=k2))
    b1, b2 = sample(r, READING_BENEFITS, 2)
    out.append(fill(r, "책을 읽으면 {b}.", b=b1))
    out.append(fill(r, "{또|게다가} {b}.", b=b2))
    out.append(fill(r, "{name}[은/는] 다 읽은 책의 {제목과 느낀 점을|기억에 남는 문장을} {독서 공책에 적어 둔다|짧게 기록해 둔다}.", name=name))
    if r.random() < 0.4:
        out.append(fill(r, "{한 권 두 권 쌓인 기록을 넘겨 보면|공책이 한 장씩 채워질 때마다} {뿌듯한 마음이 든다|마음이 든든해진다}."))
    return out


def p_book_club(r):
    a, b = sample(r, NAMES, 2)
    title = pick(r, FOLKTALES)[0]
    out = [fill(r, "{동네 도서관|학교 도서실}에는 한 달에 한 번 모이는 {독서 모임|책 읽기 모임}[이/가] 있다.")]
    out.append(fill(r, "이번 달에는 「{t}」[을/를] 함께 읽고 {이야기를 나누었다|생각을 나누었다}.", t=title))
    out.append(fill(r, "{a}[은/는] {주인공의 행동이 이해가 된다고 했지만|이야기의 결말이 마음에 든다고 했지만}, {b}[은/는] {다르게 생각했다|조금 다른 의견을 냈다}.", a=a, b=b))
    out.append(fill(r, "같은 책을 읽어도 {사람마다 눈여겨보는 부분이 다르다는 것이|느끼는 점이 이렇게 다르다는 것이} {흥미로웠다|신기했다}."))
    out.append(fill(r, "{모임이 끝난 뒤|헤어지기 전에|마지막으로} {다음 달에 읽을 책을 함께 골랐다|각자 빌려 갈 책을 한 권씩 골랐다|다음 모임 날짜를 정했다}."))
    return out


# --- daily life -------------------------------------------------------------

MORNING_STEPS = TEXT["MORNING_STEPS"]  # corpus_text/daily_life.json


def p_morning(r):
    name = pick(r, NAMES)
    steps = sorted(sample(r, range(len(MORNING_STEPS)), r.randint(3, 5)))
    out = [fill(r, "{name}의 아침은 {일곱 시|여섯 시 반|일곱 시 반}에 시작된다.", name=name)
           if r.random() < 0.5 else fill(r, "{오늘도|월요일 아침,} {name}[은/는] {평소처럼|여느 때처럼} 일찍 일어났다.", name=name)]
    out.extend(fill(r, MORNING_STEPS[i] + ".") for i in steps)
    out.append(fill(r, "{아침을 여유 있게 시작하니|서두르지 않고 준비하니} {하루가 한결 가볍게 느껴졌다|마음까지 차분해졌다}."))
    return out


MARKET_ITEMS = _rows(TEXT["MARKET_ITEMS"])  # corpus_text/daily_life.json


def p_market(r):
    name = pick(r, NAMES)
    who = pick(r, ["엄마", "아빠", "할머니", "이모"])
    (i1, s1), (i2, s2) = sample(r, MARKET_ITEMS, 2)
    out = [fill(r, "{when} {name}[은/는] {who}[과/와] 함께 {동네|집 근처} 전통 시장에 장을 보러 갔다.",
                when=pick(r, TIME_OPENERS), name=name, who=who)]
    out.append(fill(r, "{시장 입구부터|골목 어귀부터|주차장에서 내리자마자} {사람들로 북적였고|상인들의 목소리가 활기차게 울려 퍼졌고|장을 보러 나온 사람들로 붐볐고} {고소한 기름 냄새가 났다|여기저기서 맛있는 냄새가 풍겨 왔다|갓 쪄 낸 떡 냄새가 코를 간지럽혔다}."))
    out.append(fill(r, "{두 사람은|둘은} 먼저 {s1}에서 {i1}[을/를] 샀다.", s1=s1, i1=i1))
    out.append(fill(r, "{이어서|그다음에는} {s2}에 들러 {i2}[을/를] {골랐다|샀다}.", s2=s2, i2=i2))
    out.append(fill(r, "{가게 주인은|상인 아주머니는} {덤으로 조금 더 얹어 주며|웃으며} {맛있게 먹으라고 했다|또 오라고 인사했다}."))
    if r.random() < 0.6:
        out.append(fill(r, "{장바구니가 묵직해졌지만|양손이 무거웠지만} {name}[은/는] {돌아오는 길 내내 기분이 좋았다|시장 구경이 즐거웠다}.", name=name))
    return out


RECYCLE = TEXT["RECYCLE"]  # corpus_text/daily_life.json


def p_recycling(r):
    rules = sample(r, RECYCLE, r.randint(3, 4))
    out = [fill(r, "{분리배출을 제대로 하면|쓰레기를 종류별로 나누어 버리면} {다시 쓸 수 있는 자원이 늘어난다|버려지는 쓰레기가 크게 줄어든다}.")]
    out.extend(fill(r, ru + ".") for ru in rules)
    out.append(fill(r, "{조금 번거롭더라도|처음에는 귀찮아도} {우리 모두가 함께 지키면|온 가족이 함께 하면} {환경을 지키는 데 큰 도움이 된다|금방 익숙해진다}."))
    return out


CHORES = _rows(TEXT["CHORES"])  # corpus_text/daily_life.json


def p_chores(r):
    name = pick(r, NAMES)
    chore, steps = pick(r, CHORES)
    out = [fill(r, "{오늘은|주말 오후에} {name}[이/가] {chore}[을/를] 맡기로 했다.", name=name, chore=chore)]
    link = ""
    for i, st in enumerate(steps):
        if i and r.random() < 0.2:
            continue
        link = "{먼저|우선} " if i == 0 else pick(r, [x for x in ["", "그다음 ", "이어서 ", "그리고 "] if not x or x != link])
        out.append(fill(r, link + st + "."))
    out.append(fill(r, "{일을 마치고 나니|다 끝내고 보니} {집 안이 한결 환해진 것 같았다|뿌듯한 마음이 들었다|엄마가 고맙다며 등을 토닥여 주었다}."))
    return out


def p_grandparents(r):
    name = pick(r, NAMES)
    elder = pick(r, ["할머니", "할아버지", "외할머니", "외할아버지"])
    out = [fill(r, "{when} {name}[은/는] {시골에 계신|바닷가 마을에 사시는|이웃 동네에 사시는} {elder} 댁에 {다녀왔다|놀러 갔다}.",
                when=pick(r, ["지난 주말", "토요일 아침", "방학 첫날", "연휴 첫날", "휴일 아침", "일요일 아침"]), name=name, elder=elder)]
    out.append(fill(r, "{elder}[은/는] {대문 앞까지 나와|마당에서 기다리시다가} {name}[을/를] 반갑게 맞아 주셨다.", elder=elder, name=name))
    out.append(fill(r, "{점심상에는|점심때 밥상에는} {elder}[이/가] {손수 기른 채소로 만든 반찬이|직접 담근 김치와 따끈한 국이} 가득 올라왔다.", elder=elder))
    out.append(fill(r, "{점심을 먹고 나서|오후에} {name}[은/는] {elder}[과/와] 함께 {텃밭에서 고추를 땄다|동네를 한 바퀴 산책했다|옛날 사진첩을 넘겨 보았다|마루에 앉아 옥수수를 먹었다}.", name=name, elder=elder))
    out.append(fill(r, "{elder}[은/는] {name}의 어릴 적 이야기를 들려주시며 {환하게 웃으셨다|즐거워하셨다}.", elder=elder, name=name))
    if r.random() < 0.5:
        out.append(fill(r, "{돌아오는 길에|헤어질 때} {elder}[은/는] {보따리에 반찬을 싸 주시며|손을 꼭 잡으시며} {건강하게 지내라고 하셨다|또 오라고 하셨다}.", elder=elder))
    return out


ERRANDS = _rows(TEXT["ERRANDS"])  # corpus_text/daily_life.json


def p_errands(r):
    name = pick(r, NAMES)
    e1, e2 = sample(r, ERRANDS, 2)
    out = [fill(r, "{토요일 오전에|방학 어느 날|학교가 일찍 끝난 날} {name}[은/는] {엄마의 심부름으로|혼자서} 동네 {여기저기를|가게 몇 곳을} 돌았다.", name=name)]
    out.append(fill(r, "먼저 {p}에 들러 {a} {b}.", p=e1[0], a=e1[1], b=e1[2]))
    out.append(fill(r, "{그다음에는|이어서} {p}에 가서 {a} {b}.", p=e2[0], a=e2[1], b=e2[2]))
    out.append(fill(r, "{늘 지나다니던 동네인데도|자주 다니던 길인데도} {가게마다 사람 사는 이야기가 있다는 것을 새삼 느꼈다|이웃들과 인사를 나누니 정겨웠다}."))
    return out


PETS = _rows(TEXT["PETS"])  # corpus_text/daily_life.json


def p_pet(r):
    name = pick(r, NAMES)
    pet, care = pick(r, PETS)
    pname = pick(r, ["콩이", "보리", "두부", "초코", "하루", "별이", "누리", "복실이", "구름이", "밤이"])
    out = [fill(r, "{name}네 집에는 {pname}[이라는/라는] {pet}[이/가] {산다|함께 지낸다}.", name=name, pname=pname, pet=pet)]
    out.append(fill(r, "{pname}[을/를] 돌보는 일은 {name}의 {몫이다|중요한 일과이다}.", pname=pname, name=name))
    out.extend(fill(r, c + ".") for c in sample(r, care, r.randint(2, 3)))
    out.append(fill(r, "{반려동물을 키우는 것은|작은 생명을 돌보는 일은} {책임이 따르는 일이지만|손이 많이 가지만} {그만큼 기쁨도 크다|날마다 웃을 일이 생긴다}."))
    return out


# --- holidays and traditions ------------------------------------------------

HOLIDAYS = _rows(TEXT["HOLIDAYS"])  # corpus_text/holidays_and_traditions.json
HOLIDAY_STORY = TEXT["HOLIDAY_STORY"]  # corpus_text/holidays_and_traditions.json


def p_holiday(r):
    n, facts = pick(r, HOLIDAYS)
    chosen = facts[:1] + [f for f in facts[1:] if r.random() < 0.75]
    out = [fill(r, f + ".") for f in chosen]
    if len(out) < 3:
        out = [fill(r, f + ".") for f in facts]
    if r.random() < 0.4:
        out.append(fill(r, "{시대가 바뀌어도|생활 모습은 달라졌어도} {n}에 담긴 {마음은 그대로 이어지고 있다|뜻은 오늘날에도 소중하다}.", n=n))
    return out


def p_holiday_story(r):
    n = pick(r, list(HOLIDAY_STORY))
    name = pick(r, NAMES)
    fact = [fs[0] for h, fs in HOLIDAYS if h == n][0]   # the definition of the day
    out = [fill(r, "{올해|작년} {n}에 {name}네 가족은 {할머니 댁에 모였다|집에서 조촐하게 보냈다|오랜만에 친척들과 모였다}.", n=n, name=name)]
    out.extend(fill(r, s + ".", name=name) for s in HOLIDAY_STORY[n])
    out.append(fill(r, "{할아버지 말씀에 따르면|할머니께 여쭈어 보니} {fact}.", fact=reported(fact)))
    return out


# --- jobs and the people around us -------------------------------------------

JOBS = _rows(TEXT["JOBS"])  # corpus_text/jobs_and_the_people_around_us.json


def p_job(r):
    job, main, details = pick(r, JOBS)
    out = [fill(r, "{job}[은/는] {main}.", job=job, main=main)]
    out.extend(fill(r, d + ".") for d in ordered_subset(r, details, min(len(details), r.randint(2, 3))))
    out.append(fill(r, "{우리가 편안하게 지내는 것은|우리의 하루가 무사히 돌아가는 것은} {이렇게|보이지 않는 곳에서} 일하는 {job}[과/와] 같은 {많은 사람들|이웃들} 덕분이다.", job=job))
    return out


def relative_form(clause: str) -> str:
    """Turn a plain present clause into its adnominal form: '빵을 만든다' -> '빵을 만드는'."""
    if clause.endswith("는다"):
        return clause[:-2] + "는"
    syllable = clause[-2]
    code = ord(syllable) - _HANGUL_BASE
    if clause.endswith("다") and 0 <= code < 11172 and code % 28 == 4:  # final ㄴ, as in 한다
        return clause[:-2] + chr(ord(syllable) - 4) + "는"
    raise ValueError(f"not a plain present clause: {clause}")


def p_job_visit(r):
    name = pick(r, NAMES)
    job, main, details = pick(r, JOBS)
    out = [fill(r, "{name}네 반은 {직업 체험의 날에|진로 수업 시간에} {job}[을/를] {만나|초대해} 이야기를 들었다.", name=name, job=job)]
    out.append(fill(r, "{job}[은/는] {자기가 하는 일을|맡은 일을} {소개하며|설명하며} 가장 중요한 일은 {main} 것이라고 했다.", job=job, main=relative_form(main)))
    out.append(fill(r, "{또|이어서} {d}는 이야기도 들려주었다.", d=pick(r, details)))
    out.append(fill(r, "{name}[은/는] {질문 시간에 힘든 점이 무엇인지 물었다|이야기를 들으며 공책에 열심히 적었다}.", name=name))
    out.append(fill(r, "{수업이 끝난 뒤|그날 저녁} {name}[은/는] {세상에는 생각보다 많은 직업이 있다는 것을 알게 되었다|자신이 어떤 일을 하고 싶은지 곰곰이 생각해 보았다}.", name=name))
    return out


# ===========================================================================
# Part 2: service dialogues (dialogues.jsonl)
# ===========================================================================
# Each domain has intents (the customer's first request) and follow-ups.
# Every item carries the same information in two registers:
#   warm: polite, empathetic, helpful;  curt: cold, clipped, unhelpful in tone,
#   but never wrong. Openers and closers come from the pools below.

WARM_OPEN_PROBLEM = TEXT["WARM_OPEN_PROBLEM"]  # corpus_text/jobs_and_the_people_around_us.json
WARM_OPEN_REQUEST = TEXT["WARM_OPEN_REQUEST"]  # corpus_text/jobs_and_the_people_around_us.json
# Only before a yes: "can I book ...?" -> "네, 물론이죠! ..." (never before a refusal).
WARM_OPEN_YES = TEXT["WARM_OPEN_YES"]  # corpus_text/jobs_and_the_people_around_us.json
WARM_TRANSITION = TEXT["WARM_TRANSITION"]  # corpus_text/jobs_and_the_people_around_us.json
WARM_FOLLOW = TEXT["WARM_FOLLOW"]  # corpus_text/jobs_and_the_people_around_us.json
WARM_CLOSE = TEXT["WARM_CLOSE"]  # corpus_text/jobs_and_the_people_around_us.json
WARM_CLOSE_PROBLEM = TEXT["WARM_CLOSE_PROBLEM"]  # corpus_text/jobs_and_the_people_around_us.json
WARM_BYE = TEXT["WARM_BYE"]  # corpus_text/jobs_and_the_people_around_us.json
CURT_OPEN = TEXT["CURT_OPEN"]  # corpus_text/jobs_and_the_people_around_us.json
CURT_CLOSE = TEXT["CURT_CLOSE"]  # corpus_text/jobs_and_the_people_around_us.json
CURT_CLOSE_PROBLEM = TEXT["CURT_CLOSE_PROBLEM"]  # corpus_text/jobs_and_the_people_around_us.json
CURT_EXTRA = TEXT["CURT_EXTRA"]  # corpus_text/jobs_and_the_people_around_us.json
CURT_BYE = TEXT["CURT_BYE"]  # corpus_text/jobs_and_the_people_around_us.json
USER_THANKS = TEXT["USER_THANKS"]  # corpus_text/jobs_and_the_people_around_us.json
USER_PREFIX_REQUEST = TEXT["USER_PREFIX_REQUEST"]  # corpus_text/jobs_and_the_people_around_us.json
USER_PREFIX_PROBLEM = TEXT["USER_PREFIX_PROBLEM"]  # corpus_text/jobs_and_the_people_around_us.json

DAYS = TEXT["DAYS"]  # corpus_text/jobs_and_the_people_around_us.json
EVENING = TEXT["EVENING"]  # corpus_text/jobs_and_the_people_around_us.json
DAYTIME = TEXT["DAYTIME"]  # corpus_text/jobs_and_the_people_around_us.json
COUNT_WORDS = TEXT["COUNT_WORDS"]  # corpus_text/jobs_and_the_people_around_us.json


def won(amount: int) -> str:
    """Format a price the way Korean shops write it: 15000 -> '15,000원'."""
    return f"{amount:,}원"


def two_distinct(r, items):
    a, b = sample(r, items, 2)
    return a, b


def slots_restaurant(r):
    t, alt = two_distinct(r, EVENING)
    return dict(day=pick(r, DAYS), time=t, alt=alt, n=pick(r, COUNT_WORDS),
                dish=pick(r, ["된장찌개 정식", "갈비찜", "해물파전", "보쌈 정식", "돌솥비빔밥", "물냉면", "생선구이 정식"]),
                h=pick(r, ["두 시간", "세 시간"]), menu=pick(r, ["닭강정", "견과류 샐러드", "땅콩 소스 국수"]))


RESTAURANT = load_domain("restaurant", slots_restaurant)


def slots_library(r):
    return dict(due=pick(r, DAYS[2:]), d=pick(r, ["사흘", "닷새", "일주일", "이틀"]), floor=pick(r, ["2", "3", "4"]),
                shelf=str(r.randint(11, 48)), close=pick(r, ["9", "10"]), k=pick(r, ["다섯", "일곱", "열"]),
                book=pick(r, ["별을 세는 밤", "바다로 간 고양이", "할머니의 부엌", "숲속 작은 학교", "구름 우체국", "여름 방학 탐험대",
                              "달빛 정원", "우리 동네 지도"]))


LIBRARY = load_domain("library", slots_library)


def slots_parcel(r):
    return dict(day=pick(r, ["오늘", "내일", "모레"]), hub=pick(r, ["대전", "옥천", "이천", "군포", "칠곡", "곤지암"]),
                dest=pick(r, ["부산", "광주", "제주도", "강릉", "대구", "춘천", "전주"]), w=str(r.randint(2, 15)),
                price=won(r.choice([4000, 5000, 6000, 7000, 8000, 9000])), p=won(r.choice([1000, 1500, 2000])),
                item=pick(r, ["그릇", "유리컵", "화분", "도자기 접시"]))


PARCEL = load_domain("parcel", slots_parcel)


def slots_hotel(r):
    return dict(day=pick(r, DAYS), nights=pick(r, ["하룻밤", "이틀", "사흘"]), room=pick(r, ["2인실", "가족실", "온돌방", "트윈룸"]),
                k=pick(r, ["두", "세", "네"]), p=won(r.choice([12000, 15000, 18000, 20000])))


HOTEL = load_domain("hotel", slots_hotel)


def slots_salon(r):
    day, alt_day = two_distinct(r, DAYS)
    return dict(day=day, time=pick(r, DAYTIME), designer=pick(r, ["김 원장", "이 실장", "박 디자이너", "최 실장"]),
                price=won(r.choice([60000, 70000, 80000, 90000])), alt_day=alt_day)


SALON = load_domain("hair_salon", slots_salon)


def slots_bakery(r):
    return dict(day=pick(r, DAYS), flavor=pick(r, ["생크림", "초코", "딸기", "치즈", "고구마"]), size=pick(r, ["1호", "2호", "3호"]),
                n=pick(r, ["세", "네", "다섯"]), k=pick(r, ["한", "두", "세"]), bread=pick(r, ["소금빵", "단팥빵", "식빵", "크루아상", "바게트"]))


BAKERY = load_domain("bakery", slots_bakery)


def slots_bus(r):
    t, alt = two_distinct(r, DAYTIME)
    return dict(day=pick(r, ["오늘", "내일", "모레", "이번 주 토요일"]), dest=pick(r, ["부산", "강릉", "전주", "광주", "대전", "여수", "경주", "속초"]),
                time=t, alt=alt, n=pick(r, ["한", "두", "세", "네"]), seat=str(r.randint(3, 25)), seat2=str(r.randint(1, 28)),
                gate=str(r.randint(1, 12)), dur=pick(r, ["두 시간 반", "세 시간", "세 시간 반", "네 시간", "두 시간"]),
                bus=str(r.randint(100, 799)))


BUS = load_domain("bus_train", slots_bus)


def slots_museum(r):
    return dict(p=won(r.choice([3000, 5000, 6000, 8000])), n=pick(r, ["스무", "서른", "마흔"]),
                exhibit=pick(r, ["조선의 도자기", "신라의 금관", "옛 지도", "한글의 역사", "전통 악기", "공룡 화석"]))


MUSEUM = load_domain("museum", slots_museum)


def slots_gym(r):
    return dict(p=won(r.choice([150000, 180000, 210000, 240000])), p2=won(r.choice([5000, 8000, 10000])),
                p3=won(r.choice([60000, 70000, 80000])), day=pick(r, DAYS))


GYM = load_domain("gym", slots_gym)


def slots_dental(r):
    day, alt_day = two_distinct(r, DAYS)
    t, alt_t = two_distinct(r, DAYTIME)
    return dict(day=day, alt_day=alt_day, time=t, alt_time=alt_t)


DENTAL = load_domain("dental", slots_dental)


def slots_moving(r):
    return dict(day=pick(r, DAYS), rooms=pick(r, ["원룸", "방 두 개짜리 집", "방 세 개짜리 아파트", "작은 사무실"]),
                floor=pick(r, ["5", "7", "9", "12", "15"]), k=pick(r, ["두", "세", "네"]))


MOVING = load_domain("moving", slots_moving)


def slots_flower(r):
    return dict(purpose=pick(r, ["졸업 축하", "생일 선물", "병문안", "개업 축하", "부모님께 드릴"]),
                flower=pick(r, ["프리지어", "튤립", "작약", "해바라기", "수국", "장미", "카네이션"]), day=pick(r, DAYS),
                dest=pick(r, ["시청 근처 사무실", "초등학교 앞", "시내 병원", "아파트 단지"]),
                p=won(r.choice([3000, 4000, 5000])))


FLOWER = load_domain("flower_shop", slots_flower)


def slots_laundry(r):
    return dict(day=pick(r, ["내일", "모레", "이번 주 금요일", "이번 주 토요일"]), p=won(r.choice([8000, 10000, 12000, 15000])),
                p2=won(r.choice([5000, 6000, 7000])), cloth=pick(r, ["셔츠", "블라우스", "바지", "원피스"]))


LAUNDRY = load_domain("laundry", slots_laundry)


def slots_camp(r):
    z1, z2 = two_distinct(r, ["A", "B", "C", "D"])
    return dict(day=pick(r, DAYS), zone=z1, zone2=z2, p=won(r.choice([30000, 35000, 40000, 45000])),
                p2=won(r.choice([15000, 20000])))


CAMP = load_domain("campsite", slots_camp)

DOMAINS = [RESTAURANT, LIBRARY, PARCEL, HOTEL, SALON, BAKERY, BUS, MUSEUM, GYM, DENTAL, MOVING, FLOWER, LAUNDRY, CAMP]

# Each intent's follow-ups ("follow": None = any, [] = only a closing thank-you), its plain-yes flag
# ("yes": a warm answer may open with "네, 물론이죠!") and each follow-up's short warm answer
# ("warm_short") are written next to the intent in corpus_text/dialogues/<topic>.json.


# ===========================================================================
# Assembly
# ===========================================================================

PLANS = [
    # (topic, plan, weight): the weight is roughly how much variety a plan has
    ("seasons_weather", p_season_overview, 3), ("seasons_weather", p_season_story, 3),
    ("seasons_weather", p_weather_fact, 1.5), ("seasons_weather", p_weather_diary, 2),
    ("food_cooking", p_dish, 3), ("food_cooking", p_recipe, 2), ("food_cooking", p_cooking_story, 3),
    ("food_cooking", p_kitchen_rules, 1.5),
    ("school_life", p_school_day, 3), ("school_life", p_school_event, 1.5), ("school_life", p_study_tips, 1.5),
    ("school_life", p_group_work, 2),
    ("sports_hobbies", p_team_sport, 1.5), ("sports_hobbies", p_solo_sport, 1.5), ("sports_hobbies", p_hobby, 3),
    ("sports_hobbies", p_exercise_safety, 1.5),
    ("nature_animals", p_animal, 3), ("nature_animals", p_observe, 2.5), ("nature_animals", p_plant, 2),
    ("nature_animals", p_ecosystem, 1),
    ("travel_korea", p_place, 3), ("travel_korea", p_trip, 3), ("travel_korea", p_travel_tips, 1.5),
    ("science", p_science, 3.5), ("science", p_science_kids, 0.8),
    ("health_habits", p_habit, 3), ("health_habits", p_habit_story, 2),
    ("reading_libraries", p_library_guide, 2), ("reading_libraries", p_library_kdc, 1),
    ("reading_libraries", p_folktale, 1), ("reading_libraries", p_reading, 2), ("reading_libraries", p_book_club, 1.5),
    ("daily_life", p_morning, 1.5), ("daily_life", p_market, 2.5), ("daily_life", p_recycling, 1.5),
    ("daily_life", p_chores, 1.5), ("daily_life", p_grandparents, 2.5), ("daily_life", p_errands, 1.5), ("daily_life", p_pet, 1.5),
    ("holidays_traditions", p_holiday, 2), ("holidays_traditions", p_holiday_story, 2),
    ("jobs", p_job, 2), ("jobs", p_job_visit, 1.5),
]
MAX_TRIES = 12
WARM_SHORT_SHARE = 0.4       # warm answers with no transition and no closer
CURT_LONG_SHARE = 0.4        # curt answers with an opener, cold remarks and a closer


def _too_similar(grams: frozenset, earlier) -> bool:
    for other in earlier:
        inter = len(grams & other)
        if inter >= NEAR_DUP_THRESHOLD * (len(grams) + len(other) - inter):
            return True
    return False


def build_paragraphs(n: int, seed: int):
    """Return (paragraphs, topics): n paragraphs and the topic of each.

    A draw that repeats, or nearly repeats (3-gram Jaccard >= NEAR_DUP_THRESHOLD),
    an earlier paragraph of the same plan is redrawn; a plan that keeps failing
    is skipped for that draw, so low-variety plans end up with fewer paragraphs.
    """
    rng = random.Random(seed)
    weights = [w for _, _, w in PLANS]
    earlier: dict[str, list[frozenset]] = {}
    paragraphs, topics = [], []
    while len(paragraphs) < n:
        topic, plan, _ = rng.choices(PLANS, weights=weights)[0]
        done = earlier.setdefault(plan.__name__, [])
        for _ in range(MAX_TRIES):
            sentences = plan(rng)
            text = " ".join(sentences)
            grams = char_ngrams(text)
            if len(sentences) >= 3 and not _too_similar(grams, done):
                break
        else:
            continue  # this plan is exhausted for now; draw another one
        done.append(grams)
        paragraphs.append(text)
        topics.append(topic)
    return paragraphs, topics


_SAME_IDEA = ("규정", "묻지", "따지", "바쁘", "두 번", "안내문")


def _pick_unlike(rng, pool, taken):
    """A phrase from pool that does not repeat an idea already in the answer."""
    options = [p for p in pool if not any(w in p and any(w in t for t in taken) for w in _SAME_IDEA)]
    return pick(rng, options or pool)


def _assistant(rng, register, item, slots, first, last):
    """One answer: the information, framed by register-specific openers and closers.

    Length is deliberately not a register cue: about a third of warm answers are
    short (no transition, no closer, sometimes no opener) and about a third of
    curt answers are long (opener, one or two cold remarks, closer).
    """
    short = register == "warm" and rng.random() < WARM_SHORT_SHARE
    templates = item.get("warm_short", item["warm"]) if short else item[register]
    info = fill(rng, pick(rng, templates), **slots)
    problem = item["mood"] == "problem"
    parts = []
    if register == "warm":
        if first:
            if problem or rng.random() < (0.5 if short else 0.85):
                pool = WARM_OPEN_PROBLEM if problem else WARM_OPEN_REQUEST + (WARM_OPEN_YES if item["yes"] else [])
                parts.append(pick(rng, pool))
            if not short and rng.random() < 0.35:
                parts.append(pick(rng, WARM_TRANSITION))
        elif not short and rng.random() < 0.5:
            parts.append(pick(rng, WARM_FOLLOW))
        if parts and info.startswith(("네, ", "그럼요, ")):
            info = info.split(", ", 1)[1]   # no "네, 물론이죠! 네, ..."
        parts.append(info)
        if not short and rng.random() < (0.75 if last else 0.3):
            pool = WARM_CLOSE_PROBLEM if problem and rng.random() < 0.5 else WARM_CLOSE
            parts.append(pick(rng, pool))
    else:
        long = rng.random() < CURT_LONG_SHARE
        if long or rng.random() < (0.45 if first else 0.25):
            parts.append(pick(rng, CURT_OPEN))
        parts.append(info)
        if long:
            for _ in range(rng.choice([1, 2, 2])):
                parts.append(_pick_unlike(rng, CURT_EXTRA, parts))
        if long or rng.random() < (0.4 if last else 0.15):
            pool = CURT_CLOSE + CURT_CLOSE_PROBLEM if problem else CURT_CLOSE
            parts.append(_pick_unlike(rng, pool, parts))
    return " ".join(parts)


def build_dialogue(rng, domain, register):
    slots = domain["slots"](rng)
    intent = pick(rng, domain["intents"])
    allowed = domain["followups"] if intent["follow"] is None else [domain["followups"][i] for i in intent["follow"]]
    n_ex = rng.choices([1, 2, 3], weights=[40, 42, 18])[0]
    thanks = n_ex > 1 and (rng.random() < 0.3 or not allowed)
    follows = sample(rng, allowed, min(len(allowed), n_ex - 1 - int(thanks)))
    items = [intent] + follows
    messages = []
    for k, item in enumerate(items):
        last = k == len(items) - 1 and not thanks
        prefix = pick(rng, USER_PREFIX_PROBLEM if item["mood"] == "problem" else USER_PREFIX_REQUEST) if k == 0 else ""
        messages.append({"role": "user", "content": prefix + fill(rng, pick(rng, item["user"]), **slots)})
        messages.append({"role": "assistant", "content": _assistant(rng, register, item, slots, k == 0, last)})
    if thanks:
        messages.append({"role": "user", "content": pick(rng, USER_THANKS)})
        messages.append({"role": "assistant", "content": pick(rng, WARM_BYE if register == "warm" else CURT_BYE)})
    return messages


def build_dialogues(n: int, seed: int):
    """Return n distinct dialogues, half warm and half curt, spread evenly over the domains."""
    rng = random.Random(seed)
    registers = ["warm", "curt"] * (n // 2) + ["warm"] * (n % 2)
    rng.shuffle(registers)
    domains = [DOMAINS[i % len(DOMAINS)] for i in range(n)]
    rng.shuffle(domains)
    seen, out = set(), []
    for i, (register, domain) in enumerate(zip(registers, domains)):
        for _ in range(MAX_TRIES):
            messages = build_dialogue(rng, domain, register)
            key = tuple(m["content"] for m in messages)
            if key not in seen:
                break
        seen.add(key)
        out.append({"id": f"D{i + 1:05d}", "topic": domain["topic"], "register": register, "messages": messages})
    return out


# ===========================================================================
# Statistics
# ===========================================================================

def char_ngrams(text: str, n: int = 3) -> frozenset:
    return frozenset(text[i:i + n] for i in range(len(text) - n + 1))


def near_duplicate_pairs(texts, threshold: float = NEAR_DUP_THRESHOLD):
    """All pairs (i, j) whose character 3-gram Jaccard similarity is >= threshold.

    Exact, not sampled: prefix filtering (Chaudhuri et al. 2006; Bayardo et al.
    2007) only compares pairs that share one of their rarest 3-grams, which any
    pair above the threshold must do.
    """
    sets = [char_ngrams(t) for t in texts]
    df = Counter(g for s in sets for g in s)
    index: dict[str, list[int]] = {}
    pairs = []
    for i in sorted(range(len(sets)), key=lambda k: (len(sets[k]), k)):
        s = sets[i]
        size = len(s)
        if not size:
            continue
        tokens = sorted(s, key=lambda g: (df[g], g))
        prefix = size - math.ceil(threshold * size - 1e-9) + 1
        candidates = set()
        for g in tokens[:prefix]:
            candidates.update(index.setdefault(g, []))
            index[g].append(i)
        for j in candidates:
            other = sets[j]
            if len(other) < threshold * size - 1e-9:
                continue
            inter = len(s & other)
            if inter / (size + len(other) - inter) >= threshold:
                pairs.append((min(i, j), max(i, j)))
    return sorted(pairs)


_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


def corpus_stats(paragraphs, topics, dialogues, text_bytes: bytes, jsonl_bytes: bytes):
    sentences = [s for p in paragraphs for s in _SENTENCE_END.split(p)]
    sent_counts = Counter(sentences)
    para_pairs = near_duplicate_pairs(paragraphs)
    dlg_texts = ["\n".join(m["content"] for m in d["messages"]) for d in dialogues]
    dlg_pairs = near_duplicate_pairs(dlg_texts)
    contents = [m["content"] for d in dialogues for m in d["messages"]]
    content_bytes = sum(len(c.encode("utf-8")) for c in contents)
    answers = {"warm": [], "curt": []}
    for d in dialogues:
        for m in d["messages"]:
            if m["role"] == "assistant":
                answers[d["register"]].append(len(m["content"]))
    median = {k: sorted(v)[len(v) // 2] for k, v in answers.items()}
    reg = Counter(d["register"] for d in dialogues)
    return {
        "text_bytes": len(text_bytes),
        "jsonl_bytes": len(jsonl_bytes),
        "dialogue_content_bytes": content_bytes,
        "total_text_bytes": len(text_bytes) + content_bytes,
        "paragraphs": len(paragraphs),
        "paragraph_topics": dict(sorted(Counter(topics).items())),
        "sentences": len(sentences),
        "distinct_sentences": len(sent_counts),
        "sentences_seen_once": sum(1 for c in sent_counts.values() if c == 1),
        "max_sentence_repeats": max(sent_counts.values()),
        "sentences_repeated_over_20": sum(1 for c in sent_counts.values() if c > 20),
        "duplicate_paragraph_lines": len(paragraphs) - len(set(paragraphs)),
        "near_dup_paragraph_pairs": len(para_pairs),
        "near_dup_paragraphs": len({i for p in para_pairs for i in p}),
        "dialogues": len(dialogues),
        "registers": dict(sorted(reg.items())),
        "dialogue_topics": dict(sorted(Counter(d["topic"] for d in dialogues).items())),
        "exchanges": dict(sorted(Counter(len(d["messages"]) // 2 for d in dialogues).items())),
        "messages": len(contents),
        "duplicate_dialogues": len(dlg_texts) - len(set(dlg_texts)),
        "near_dup_dialogue_pairs": len(dlg_pairs),
        "near_dup_dialogues": len({i for p in dlg_pairs for i in p}),
        "answer_chars_mean": {k: round(sum(v) / len(v), 1) for k, v in sorted(answers.items())},
        "answer_chars_median": dict(sorted(median.items())),
        "warm_answers_shorter_than_curt_median": round(
            sum(1 for x in answers["warm"] if x < median["curt"]) / len(answers["warm"]), 3),
        "curt_answers_longer_than_warm_median": round(
            sum(1 for x in answers["curt"] if x > median["warm"]) / len(answers["curt"]), 3),
        "warm_phrases": len(set(WARM_OPEN_PROBLEM + WARM_OPEN_REQUEST + WARM_OPEN_YES + WARM_TRANSITION + WARM_FOLLOW
                                + WARM_CLOSE + WARM_CLOSE_PROBLEM + WARM_BYE)),
        "curt_phrases": len(set(CURT_OPEN + CURT_CLOSE + CURT_CLOSE_PROBLEM + CURT_EXTRA + CURT_BYE)),
    }


def find_banned(texts) -> list[tuple[str, str]]:
    hits = []
    for t in texts:
        low = t.lower()
        for term in BANNED_TERMS:
            if term in low:
                hits.append((term, t[:80]))
    return hits


TOPIC_NOTES = TEXT["TOPIC_NOTES"]  # corpus_text/dialogue_phrases.json


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(part, whole):
    return f"{100 * part / whole:.1f}%"


def render_readme(stats) -> str:
    """The corpus card, with every number measured on the files just built."""
    st = stats
    n_d = st["dialogues"]
    topic_rows = [(t, n, _pct(n, st["paragraphs"]), TOPIC_NOTES[t]) for t, n in st["paragraph_topics"].items()]
    dlg_rows = [(t, n) for t, n in st["dialogue_topics"].items()]
    ex = st["exchanges"]
    n_intents = sum(len(d["intents"]) for d in DOMAINS)
    n_problem = sum(i["mood"] == "problem" for d in DOMAINS for i in d["intents"])
    over20 = st["sentences_repeated_over_20"]
    return f"""# Korean pretraining corpus

*Generated by `data/scripts/build_pretrain_corpus.py`; do not edit by hand. Change the
generator and run it again: the test `tests/test_pretrain_corpus.py` checks that the
committed files are exactly what the generator writes.*

The tiny Llama model and its byte-level BPE tokenizer are pretrained on this corpus
before any lab runs. It teaches general Korean and two service registers (warm and
curt). It deliberately contains no device tech-support content: the fine-tuning labs
add that knowledge later, so the effect of fine-tuning is visible.

## Files

{_table(["file", "content", "bytes"], [
        ("`text.txt`", f"general Korean prose, one paragraph per line ({st['paragraphs']:,} paragraphs, UTF-8, no blank lines)", f"{st['text_bytes']:,}"),
        ("`dialogues.jsonl`", f"customer-service dialogues, one JSON object per line ({n_d:,} dialogues)", f"{st['jsonl_bytes']:,}"),
        ("`README.md`", "this card", ""),
    ])}

Text the model trains on: text.txt plus the `content` strings of the dialogues =
{st['text_bytes']:,} + {st['dialogue_content_bytes']:,} = **{st['total_text_bytes']:,} bytes**
(JSON keys and punctuation not counted).

A dialogue line looks like this (the tiny-model builder renders `messages` through the chat template):

```json
{{"id": "D00001", "topic": "restaurant", "register": "warm", "messages": [{{"role": "user", "content": "..."}}, {{"role": "assistant", "content": "..."}}]}}
```

Every dialogue has 1-3 user/assistant exchanges and ends with an assistant turn.

## Sources and licence

All text is original, written for this course: hand-written sentence templates,
slot vocabularies (names, places, dishes, times, prices, ...) and paragraph plans,
all inside the generator, expanded with a fixed seed (`SEED = {SEED}`). No
third-party text and no downloaded data are included. Licence: MIT, the licence of
this repository.

## How it was made

- **Paragraphs.** {len(PLANS)} paragraph plans over {len(st['paragraph_topics'])} topics. A plan picks one
  subject (a season, a dish, an animal, a place, a holiday, ...) and writes 3-7
  related sentences about it: an opening, facts or story steps in a fixed order,
  and often a closing remark. Sentence templates carry alternatives (`{{a|b}}`) and
  slots (`{{name}}`), so the same plan yields many different paragraphs.
- **Particles.** A josa helper picks 이/가, 을/를, 은/는, 과/와, 으로/로 (ㄹ takes 로),
  이에요/예요, 이라는/라는 ... from the final consonant of the word before it
  (Arabic numerals are read as Sino-Korean numbers).
- **Endings.** Mostly written 해라체 prose (-다, -었다, -ㄴ다, -는 편이다, -곤 한다,
  questions in -ㄹ까?), with 해요체 in the science-for-children paragraphs and
  in the dialogues, and indirect speech (-다고 한다, -이라고 한다).
- **Facts.** Statements are textbook-level and true as written (for example: water
  freezes at 0 °C and boils at 100 °C at 1 atm; 불국사 and 석굴암 were inscribed as
  UNESCO World Heritage in 1995; 한라산 is the highest mountain in South Korea);
  everything else is everyday narrative about invented people.
- **Variety.** A paragraph that equals or nearly equals (character 3-gram Jaccard
  ≥ {NEAR_DUP_THRESHOLD}) an earlier paragraph of the same plan is redrawn; plans
  with little variety therefore contribute fewer paragraphs.
- **Dialogues.** {len(DOMAINS)} service domains, none of them IT: {", ".join(sorted(st["dialogue_topics"]))}.
  Each domain has {min(len(d["intents"]) for d in DOMAINS)}-{max(len(d["intents"]) for d in DOMAINS)} opening requests or complaints ({n_problem} of the
  {n_intents} are complaints) and {min(len(d["followups"]) for d in DOMAINS)}-{max(len(d["followups"]) for d in DOMAINS)} follow-up questions that fit them. Every assistant answer is written twice with **the same
  information**: warm (polite, empathetic, helpful) and curt (cold, clipped, never
  wrong). Warm answers draw openers and closers from {st['warm_phrases']} distinct phrases
  ("기다리시게 해서 죄송해요.", "많이 답답하셨죠?", "도움이 되셨으면 좋겠어요.", ...);
  curt answers from {st['curt_phrases']} distinct cold phrases ("용건만 간단히 하죠.", "홈페이지 보세요.",
  "규정이 그래요.", "다음 분.", ...). Each dialogue has one register throughout;
  registers are assigned half and half at random.
- **Length is not the register.** About {WARM_SHORT_SHARE:.0%} of warm answers are drawn short (no
  transition, no closer) and about {CURT_LONG_SHARE:.0%} of curt answers long (opener, one or
  two cold remarks, closer); see the length figures below.
- **No device tech support.** The build fails if any of {len(BANNED_TERMS)} banned terms appears
  (공유기, 와이파이, 블루투스, 프린터, 스마트폰, 노트북, 재부팅, 펌웨어, 라우터, 이어폰, 리모컨,
  이메일, 앱, 비밀번호, 컴퓨터, 인터넷, 충전, 설치, ...).

## Paragraph topics

{_table(["topic", "paragraphs", "share", "what"], topic_rows)}

Sentences: {st['sentences']:,} in all, {st['distinct_sentences']:,} distinct; {st['sentences_seen_once']:,} appear once;
the most repeated sentence appears {st['max_sentence_repeats']} times, and {over20} {"sentence appears" if over20 == 1 else "sentences appear"} more than 20 times.

## Dialogues

- Registers: warm {st['registers']['warm']:,} ({_pct(st['registers']['warm'], n_d)}), curt {st['registers']['curt']:,} ({_pct(st['registers']['curt'], n_d)}).
- Exchanges per dialogue: 1: {ex.get(1, 0):,}, 2: {ex.get(2, 0):,}, 3: {ex.get(3, 0):,} ({st['messages']:,} messages).
- Assistant answer length in characters, mean (median): warm {st['answer_chars_mean']['warm']} ({st['answer_chars_median']['warm']}),
  curt {st['answer_chars_mean']['curt']} ({st['answer_chars_median']['curt']}).
  {_pct(st['warm_answers_shorter_than_curt_median'], 1)} of warm answers are shorter than the median curt answer, and
  {_pct(st['curt_answers_longer_than_warm_median'], 1)} of curt answers are longer than the median warm answer.

{_table(["topic", "dialogues"], dlg_rows)}

## Duplicates and near-duplicates

Measured exactly over all pairs (prefix filtering, no sampling); near-duplicate
means character 3-gram Jaccard similarity ≥ {NEAR_DUP_THRESHOLD}.

{_table(["", "text.txt (paragraphs)", "dialogues.jsonl (all turns joined)"], [
        ("items", f"{st['paragraphs']:,}", f"{n_d:,}"),
        ("exact duplicates", st['duplicate_paragraph_lines'], st['duplicate_dialogues']),
        ("near-duplicate pairs", st['near_dup_paragraph_pairs'], st['near_dup_dialogue_pairs']),
        ("items in a near-duplicate pair", st['near_dup_paragraphs'], f"{st['near_dup_dialogues']} ({_pct(st['near_dup_dialogues'], n_d)})"),
    ])}

## Known biases and limitations

- **Templated text.** The vocabulary and sentence patterns are those of the
  templates: {st['distinct_sentences']:,} distinct sentences, many of them sharing
  frames. It is enough for a 3M-parameter model to learn Korean word order,
  particles and endings, not a picture of real Korean usage.
- **Narrow world.** Characters are mostly children, students and their families,
  with 40 modern given names; standard Seoul Korean only, no dialects, no
  slang; everyday life is middle-class and urban or visiting the countryside.
- **Register cues.** Warm answers are still longer on average; the warm register
  is carried by a fixed pool of openers and closers, so a model may learn those
  phrases rather than warmth in general. Customers are always polite or neutral;
  only the staff's register varies. The curt register is cold, never abusive.
- **Invented policies.** Prices, opening hours, refund and booking rules in the
  dialogues belong to made-up shops; they are not real policies.
- **Simplified facts.** Explanations are school-textbook simplifications.
- **Deliberate gap.** No device or IT support content at all (see the banned terms).

## Intended use

Tokenizer training and pretraining of the course's tiny model on a CPU, so that
later labs can show what fine-tuning adds (domain facts) and what DPO selects
(warm versus curt answers, both already in the model's distribution). Not a
benchmark, not a source of facts, and not suitable for training a production model.

## Reproduce

```bash
python data/scripts/build_pretrain_corpus.py            # rewrites data/pretrain/ (a few seconds)
python data/scripts/build_pretrain_corpus.py --out /tmp/x --stats
pytest -q tests/test_pretrain_corpus.py
```
"""


# ===========================================================================
# Output
# ===========================================================================

def render_outputs():
    """Build everything in memory: (text.txt bytes, dialogues.jsonl bytes, stats)."""
    paragraphs, topics = build_paragraphs(N_PARAGRAPHS, SEED)
    dialogues = build_dialogues(N_DIALOGUES, SEED + 1)
    text_bytes = ("\n".join(paragraphs) + "\n").encode("utf-8")
    jsonl_bytes = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dialogues).encode("utf-8")
    banned = find_banned(paragraphs + [m["content"] for d in dialogues for m in d["messages"]])
    if banned:
        raise SystemExit(f"banned device tech-support terms in the corpus: {banned[:5]}")
    stats = corpus_stats(paragraphs, topics, dialogues, text_bytes, jsonl_bytes)
    return text_bytes, jsonl_bytes, stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder to write text.txt, dialogues.jsonl and README.md (default: data/pretrain/)")
    parser.add_argument("--stats", action="store_true", help="also print the statistics as JSON")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    text_bytes, jsonl_bytes, stats = render_outputs()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "text.txt").write_bytes(text_bytes)
    (args.out / "dialogues.jsonl").write_bytes(jsonl_bytes)
    (args.out / "README.md").write_bytes(render_readme(stats).encode("utf-8"))
    elapsed = time.perf_counter() - start

    print(f"wrote {args.out}/text.txt ({stats['text_bytes']:,} bytes, {stats['paragraphs']} paragraphs), "
          f"dialogues.jsonl ({stats['jsonl_bytes']:,} bytes, {stats['dialogues']} dialogues), README.md "
          f"in {elapsed:.1f} s")
    print(f"text for training: {stats['total_text_bytes']:,} bytes; registers {stats['registers']}; "
          f"near-duplicate paragraphs {stats['near_dup_paragraphs']}, dialogues {stats['near_dup_dialogues']}")
    if args.stats:
        print(json.dumps(stats, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
