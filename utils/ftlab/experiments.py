"""The LoRA/QLoRA experiment grid of lab 08: build, train and measure one cell at a time.

The seed project ("도메인 특화 LLM 파인튜닝 프로젝트") compares LoRA settings A
(r=8, alpha=16) and B (r=32, alpha=64), target modules ``q_proj,v_proj`` and
``all-linear``, and LoRA against QLoRA (4-bit NF4 with double quantization).
``seed_grid()`` lists those eight cells; ``run_cell`` runs one of them::

    cells = experiments.seed_grid()
    result = experiments.run_cell(cells[0], profile, train, validation, test_rows, sft_kwargs, out_dir)
    result.row()            # trainable params, memory, time, losses, fact accuracy

For every run it records what the seed asks for:

- trainable parameters (and the model's total);
- memory: weight, adapter, gradient and optimizer-state tensor bytes (exact on
  every device), the process RSS peak sampled during training (CPU), and
  ``torch.cuda.max_memory_allocated`` (GPU);
- wall time of training and seconds per optimizer step;
- training and validation loss curves (trl ``SFTTrainer`` logs);
- held-out fact accuracy of greedy answers (``ftlab.sft.fact_scores``).

Around the grid: ``saved_activation_bytes`` (what autograd keeps for the
backward pass, with and without gradient checkpointing), ``merge_adapter``
(load an adapter on a full-precision base and fold it in, as the seed advises
for QLoRA), ``prompt_logits`` (compare merged and unmerged outputs), and the
answer checklist (``domain_terms``, ``checklist``, ``kb_fix_rate``).
"""

from __future__ import annotations

import math
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

QV = "q_proj,v_proj"
ALL_LINEAR = "all-linear"
MLP = "gate_proj,up_proj,down_proj"
EMBEDDINGS = ("embed_tokens", "lm_head")  # trained in full with peft's modules_to_save when a cell asks for it
TARGET_LABELS = {QV: "qv", ALL_LINEAR: "all", MLP: "mlp"}
SEED_SETTINGS = (("A", 8, 16), ("B", 32, 64))  # the seed's experiments A and B: (name, r, alpha)


# ---------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One configuration of the grid: a LoRA setting, its target modules, LoRA or QLoRA.

    ``embeddings=True`` also trains the token embeddings and the output layer in
    full (``LoraConfig(modules_to_save=["embed_tokens", "lm_head"], ensure_weight_tying=True)``): the fix
    for answers that need tokens the base model never learned to produce (lab 08).
    ``full=True`` is the full fine-tuning reference (no adapter; r and alpha unused).
    """

    setting: str  # "A" or "B" (the seed's experiment names), or a label such as "full"
    r: int  # LoRA rank
    alpha: int  # LoRA alpha; the update is scaled by alpha / r
    targets: str  # "q_proj,v_proj", "all-linear" or "gate_proj,up_proj,down_proj"
    qlora: bool  # True: the base model is loaded in 4-bit NF4 with double quantization
    embeddings: bool = False  # also train embed_tokens and lm_head (modules_to_save)
    full: bool = False  # full fine-tuning instead of an adapter

    @property
    def method(self) -> str:
        return "full" if self.full else "qlora" if self.qlora else "lora"

    @property
    def target_modules(self) -> str | list[str]:
        """What ``LoraConfig(target_modules=...)`` takes: ``"all-linear"`` or a list of names."""
        return ALL_LINEAR if self.targets == ALL_LINEAR else [t.strip() for t in self.targets.split(",")]

    @property
    def modules_to_save(self) -> list[str] | None:
        return list(EMBEDDINGS) if self.embeddings else None

    @property
    def name(self) -> str:
        """Short label such as ``"A r8 qv LoRA"``, ``"B r32 all QLoRA+emb"`` or ``"full FT"``."""
        if self.full:
            return "full FT"
        where = TARGET_LABELS.get(self.targets, self.targets)
        alpha = "" if self.alpha == 2 * self.r else f" a{self.alpha}"
        return f"{self.setting} r{self.r}{alpha} {where} {'QLoRA' if self.qlora else 'LoRA'}{'+emb' if self.embeddings else ''}"


def seed_grid(
    settings: Sequence[tuple[str, int, int]] = SEED_SETTINGS,
    targets: Sequence[str] = (QV, ALL_LINEAR),
    qlora: Sequence[bool] = (False, True),
    embeddings: bool = False,
) -> list[Cell]:
    """All combinations, LoRA runs first: 2 settings x 2 target sets x 2 methods = 8 cells."""
    return [Cell(name, r, alpha, t, q, embeddings) for q in qlora for name, r, alpha in settings for t in targets]


FULL_FT = Cell("full", 0, 0, "", False, full=True)


def fact_subset(train_rows: Sequence[dict], held_out_rows: Sequence[dict], n_facts: int, seed: int = 0):
    """``(train, held_out, fact_ids)`` for ``n_facts`` facts drawn at random (seeded, reproducible).

    Every training row of those facts is kept, so each fact is seen several
    times per epoch; ``held_out`` keeps the given held-out rows of the same facts
    (phrasings never seen in training) in their original order.
    """
    import random

    facts = sorted({row["fact_id"] for row in train_rows})
    if not 0 < n_facts <= len(facts):
        raise ValueError(f"n_facts must be between 1 and {len(facts)}, got {n_facts}")
    keep = sorted(random.Random(seed).sample(facts, n_facts))
    chosen = set(keep)
    return ([r for r in train_rows if r["fact_id"] in chosen], [r for r in held_out_rows if r["fact_id"] in chosen], keep)


def lora_config(cell: Cell, dropout: float = 0.05):
    """The ``peft.LoraConfig`` of a cell (no bias, causal LM)."""
    from peft import LoraConfig

    # ensure_weight_tying: a model whose lm_head shares the embedding matrix (the tiny model) trains ONE shared
    # copy, so the tie survives training and merging; untied models get one copy per module.
    return LoraConfig(r=cell.r, lora_alpha=cell.alpha, lora_dropout=dropout, target_modules=cell.target_modules,
                      modules_to_save=cell.modules_to_save, ensure_weight_tying=cell.embeddings,
                      bias="none", task_type="CAUSAL_LM")


def load_base(profile, qlora: bool, gradient_checkpointing: bool = False):
    """The profile's base model and tokenizer; for QLoRA in 4-bit NF4, prepared for k-bit training.

    ``peft.prepare_model_for_kbit_training`` casts the non-quantized parameters
    (embeddings, norms) to fp32 and, by default, turns gradient checkpointing on;
    here it follows ``gradient_checkpointing`` so LoRA and QLoRA runs compare fairly.
    """
    import torch
    from peft import prepare_model_for_kbit_training

    from ftlab.profile import load_model_and_tokenizer

    # CPU: the 4-bit layers compute in fp32, not bf16. CPUs without bf16 matrix instructions
    # (AVX-512 BF16, AMX) emulate bf16 matmuls, many times slower (lab 08 measures it).
    compute = torch.float32 if profile.device == "cpu" else None
    model, tokenizer = load_model_and_tokenizer(profile, load_in_4bit=qlora, compute_dtype=compute)
    if qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    return model, tokenizer


def build_model(cell: Cell, profile, dropout: float = 0.05, gradient_checkpointing: bool = False):
    """``(model, tokenizer)``: the base model of ``profile`` with a fresh adapter for ``cell`` (none for full FT)."""
    from peft import get_peft_model

    model, tokenizer = load_base(profile, cell.qlora, gradient_checkpointing)
    if cell.full:
        return model, tokenizer
    return get_peft_model(model, lora_config(cell, dropout)), tokenizer


def count_params(model) -> tuple[int, int]:
    """``(trainable, total)`` parameters; a 4-bit weight counts as its original number of values."""
    trainable = total = 0
    for p in model.parameters():
        n = math.prod(p.quant_state.shape) if getattr(p, "quant_state", None) is not None else p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------


def _nbytes(t) -> int:
    return t.numel() * t.element_size()


def tensor_memory(model, optimizer=None) -> dict[str, int]:
    """Bytes of the tensors that stay in memory during training.

    ``base_weights`` (4-bit layers with their quantization state, plus every
    frozen full-precision parameter; buffers such as the rotary-embedding
    frequencies, a few hundred bytes, are left out as ``ftlab.memory`` does), ``adapter`` (trainable parameters),
    ``gradients`` (one per trainable parameter, same dtype: what exists after
    ``backward``), ``optimizer`` (every tensor in ``optimizer.state``, e.g.
    AdamW's two moments and step counters; 0 without an optimizer).
    """
    from ftlab.quant import weight_bytes

    buffers = sum(_nbytes(b) for b in model.buffers())
    weights = weight_bytes(model)["total"] - buffers
    adapter = sum(_nbytes(p) for p in model.parameters() if p.requires_grad)
    optim = 0
    if optimizer is not None:
        for state in optimizer.state.values():
            optim += sum(_nbytes(v) for v in state.values() if hasattr(v, "element_size"))
    return {"base_weights": weights - adapter, "adapter": adapter, "gradients": adapter, "optimizer": optim}


def rss_bytes() -> int:
    """Resident set size of this process (bytes), via psutil."""
    import psutil

    return psutil.Process().memory_info().rss


class PeakRSS:
    """Sample the process RSS in a background thread; ``peak`` and ``baseline`` in bytes.

    RSS counts everything the process holds, including memory the allocator
    keeps after tensors are freed, so compare runs with care: a later run can
    reuse pages an earlier run left behind.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.baseline = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def delta(self) -> int:
        return self.peak - self.baseline


def _on_device(model, batch: Mapping) -> dict:
    """``batch`` with every tensor moved to the model's device (batches are built on the CPU)."""
    return {k: v.to(model.device) if hasattr(v, "to") else v for k, v in batch.items()}


def saved_activation_bytes(model, batch: Mapping) -> int:
    """Bytes autograd saves for the backward pass during one forward pass (loss included).

    Counted with ``torch.autograd.graph.saved_tensors_hooks``; a tensor saved
    twice (or a view of a saved tensor) counts once. Parameters and frozen
    weights are not counted: they exist anyway. Under gradient checkpointing
    only the tensors outside the checkpointed layers are saved, which is the
    memory it buys.
    """
    import torch

    params = {p.data_ptr() for p in model.parameters()}
    seen: set[tuple[int, int]] = set()
    total = 0

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if t.data_ptr() not in params and key not in seen:
            seen.add(key)
            total += key[1]
        return t

    batch = _on_device(model, batch)
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    model.eval()
    return total


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------


@dataclass
class RunResult:
    """Everything measured for one cell (bytes, seconds, nats per token)."""

    cell: Cell
    trainable_params: int
    total_params: int
    memory: dict[str, int]  # tensor bytes, plus rss_peak / rss_delta (CPU) or cuda_peak (GPU)
    wall_seconds: float  # trainer.train(), evaluation included
    step_seconds: float  # mean time of one optimizer step (evaluation excluded)
    steps: int
    train_loss: dict[str, list]  # {"step": [...], "value": [...]}
    val_loss: dict[str, list]
    accuracy: float  # held-out fact accuracy of greedy answers
    answers: list[str] = field(default_factory=list)
    adapter_dir: Path | None = None
    seed: int = 0  # adapter initialisation and data order
    correct: list[bool] = field(default_factory=list)  # per held-out question: the paired data of ftlab.stats
    nll: list[float] = field(default_factory=list)  # per held-out question: mean NLL of the reference answer
    accuracy_at: dict[int, float] = field(default_factory=dict)  # held-out accuracy after given steps
    probe_nll: float | None = None  # answer NLL on probe_pairs (e.g. general knowledge: forgetting)

    @property
    def final_val_loss(self) -> float:
        return self.val_loss["value"][-1]

    @property
    def name(self) -> str:
        return self.cell.name

    def row(self) -> dict:
        """One table row: the numbers the seed's project asks to compare."""
        mib = 1024**2
        row = {
            "run": self.name,
            "r": self.cell.r,
            "alpha": self.cell.alpha,
            "targets": self.cell.targets,
            "method": self.cell.method,
            "trainable": self.trainable_params,
            "trainable %": round(100 * self.trainable_params / self.total_params, 2),
            "weights MiB": round(self.memory["base_weights"] / mib, 2),
            "train tensors MiB": round(sum(self.memory[k] for k in ("base_weights", "adapter", "gradients", "optimizer")) / mib, 2),
        }
        if "cuda_peak" in self.memory:
            row["CUDA peak MiB"] = round(self.memory["cuda_peak"] / mib, 1)
        else:
            row["RSS peak MiB"] = round(self.memory["rss_peak"] / mib, 1)
        row.update({
            "s/step": round(self.step_seconds, 3),
            "wall s": round(self.wall_seconds, 1),
            "val loss": round(self.final_val_loss, 3),
            "fact acc": round(self.accuracy, 3),
        })
        return row


def step_timer():
    """A ``TrainerCallback`` that records the duration of every optimizer step (``.durations``)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.durations: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.durations.append(time.perf_counter() - self._start)

    return StepTimer()


def warmup_steps(max_steps: int, ratio: float) -> int:
    """The seed's ``warmup_ratio`` as a step count: ``ceil(ratio * max_steps)`` (at least 1 when ratio > 0)."""
    if not 0 <= ratio < 1:
        raise ValueError(f"warmup ratio must be in [0, 1), got {ratio}")
    return math.ceil(ratio * max_steps)


def sft_config(output_dir: Path | str, **kwargs):
    """An ``SFTConfig`` for prompt/completion data with the loss on completions only."""
    from trl import SFTConfig

    kwargs.setdefault("completion_only_loss", True)
    kwargs.setdefault("report_to", "none")
    return SFTConfig(output_dir=str(output_dir), **kwargs)


def run_cell(
    cell: Cell,
    profile,
    train_rows: Sequence[dict],
    validation_rows: Sequence[dict],
    test_rows: Sequence[dict],
    sft_kwargs: Mapping,
    output_dir: Path | str,
    template: str = "chat",
    dropout: float = 0.05,
    max_new_tokens: int = 40,
    save_adapter: bool = True,
    fp32_adapters: bool | None = None,
    seed: int = 0,
    accuracy_steps: Sequence[int] = (),
    probe_pairs: Sequence[dict] = (),
) -> RunResult:
    """Train one cell with trl's ``SFTTrainer`` and measure it (see the module docstring).

    ``seed`` fixes the adapter's initialisation and the data order (``SFTConfig.seed``);
    ``accuracy_steps`` also scores the held-out rows after those steps (``accuracy_at``);
    ``probe_pairs`` (prompt/completion pairs) get their answer NLL after training (``probe_nll``).
    ``test_rows`` are the held-out rows: each gets its greedy answer's correctness and
    the NLL of its reference answer, the paired data for ``ftlab.stats``.

    ``sft_kwargs`` go to ``SFTConfig`` (steps, batch, learning rate, schedule,
    evaluation interval, ``max_length`` ...); ``gradient_checkpointing`` among
    them is also passed to ``prepare_model_for_kbit_training``. The adapter is
    saved to ``output_dir/<cell name>`` unless ``save_adapter=False``.

    trl's ``SFTTrainer`` casts the adapters of a 4-bit model to bf16, as the
    QLoRA paper recommends. ``fp32_adapters`` (default: on the CPU profile)
    casts them back to fp32 before training: CPUs without bf16 matrix
    instructions would emulate every adapter matmul in bf16, and LoRA and
    QLoRA runs would then differ in more than the base weights.
    """
    import torch

    from ftlab import sft

    checkpointing = bool(sft_kwargs.get("gradient_checkpointing", False))
    torch.manual_seed(seed)
    model, tokenizer = build_model(cell, profile, dropout, checkpointing)
    trainable, total = count_params(model)
    run_dir = Path(output_dir) / (cell.name.replace(" ", "_") + (f"_seed{seed}" if seed else ""))
    args = sft_config(run_dir, **{**sft_kwargs, "seed": seed})
    train = sft.prompt_completion(train_rows, template, tokenizer)
    validation = sft.prompt_completion(validation_rows, template, tokenizer) if validation_rows else None
    timer, accuracy_at = step_timer(), {}
    callbacks = [timer]
    if accuracy_steps:
        score = lambda m: sft.fact_scores(m, tokenizer, list(test_rows), template, max_new_tokens)["accuracy"]
        callbacks.append(sft.measure_at(accuracy_steps, score, accuracy_at))
    trainer = sft.sft_trainer(model, tokenizer, args, train, validation, callbacks=callbacks)
    if fp32_adapters if fp32_adapters is not None else profile.device == "cpu":
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    cuda = torch.cuda.is_available() and profile.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with PeakRSS() as rss:
        trainer.train()
    wall = time.perf_counter() - started
    model.eval()
    memory = tensor_memory(model, trainer.optimizer)
    memory.update({"rss_peak": rss.peak, "rss_delta": rss.delta})
    if cuda:
        memory["cuda_peak"] = torch.cuda.max_memory_allocated()
    log = trainer.state.log_history
    scores = sft.fact_scores(model, tokenizer, list(test_rows), template, max_new_tokens)
    sums = sft.answer_nll_sums(model, tokenizer, sft.to_pairs(list(test_rows), template, tokenizer))
    val_loss = sft.log_series(log, "eval_loss")
    if not val_loss["step"]:  # no evaluation during training: the held-out NLL at the end
        val_loss = {"step": [trainer.state.global_step], "value": [sum(t for t, _ in sums) / max(1, sum(c for _, c in sums))]}
    adapter_dir = None
    if save_adapter and not cell.full:
        adapter_dir = run_dir / "adapter"
        model.save_pretrained(adapter_dir)
    return RunResult(
        cell=cell, trainable_params=trainable, total_params=total, memory=memory,
        wall_seconds=wall, step_seconds=sum(timer.durations) / max(1, len(timer.durations)),
        steps=trainer.state.global_step, train_loss=sft.log_series(log, "loss"),
        val_loss=val_loss, accuracy=scores["accuracy"], answers=scores["answers"],
        adapter_dir=adapter_dir, seed=seed, correct=scores["correct"],
        nll=[t / max(1, c) for t, c in sums], accuracy_at=dict(accuracy_at),
        probe_nll=sft.answer_nll(model, tokenizer, list(probe_pairs)) if probe_pairs else None,
    )


def results_table(results: Iterable[RunResult]):
    """A pandas DataFrame with one ``RunResult.row()`` per run, indexed by run name."""
    import pandas as pd

    return pd.DataFrame([r.row() for r in results]).set_index("run")


# ---------------------------------------------------------------------------
# Merging
# ---------------------------------------------------------------------------


def merge_adapter(profile, adapter_dir: Path | str):
    """``(unmerged, merged, tokenizer)``: an adapter on a full-precision base, and the same folded in.

    The base is always loaded in the profile's full or half precision (fp32 on
    CPU, fp16/bf16 on GPU), never in 4 bit: folding ``(alpha/r) B A`` into NF4
    weights would re-quantize them and round most of the small update away.
    This is the seed's "upcast before merging" for QLoRA adapters. ``unmerged``
    is a separate model (a ``PeftModel``) so the two can be compared.
    """
    from peft import PeftModel

    from ftlab.profile import load_model_and_tokenizer

    base, tokenizer = load_model_and_tokenizer(profile)
    unmerged = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    base2, _ = load_model_and_tokenizer(profile)
    merged = PeftModel.from_pretrained(base2, str(adapter_dir)).merge_and_unload().eval()
    return unmerged, merged, tokenizer


def prompt_logits(model, tokenizer, prompts: Sequence[str]):
    """fp32 logits of ``model`` on right-padded ``prompts`` (padding positions zeroed): (batch, seq, vocab)."""
    import torch

    batch = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.no_grad():
        logits = model(**batch).logits.float()
    return (logits * batch["attention_mask"][..., None]).cpu()


# ---------------------------------------------------------------------------
# The answer checklist
# ---------------------------------------------------------------------------

# Korean particles and endings stripped from the end of a word before matching (longest first).
PARTICLES = ("으로", "에서", "까지", "부터", "처럼", "이나", "을", "를", "이", "가", "은", "는", "에", "의", "로",
             "도", "와", "과", "만", "쯤")
_WORD = re.compile(r"[^\w+.]+", re.UNICODE)


def word_stems(text: str, min_len: int = 2) -> list[str]:
    """Words of ``text`` with punctuation and one trailing particle removed, at least ``min_len`` long."""
    stems = []
    for word in _WORD.split(unicodedata.normalize("NFC", text)):
        word = word.strip(".")
        for particle in PARTICLES:
            if word.endswith(particle) and len(word) - len(particle) >= min_len:
                word = word[: -len(particle)]
                break
        if len(word) >= min_len and word not in stems:
            stems.append(word)
    return stems


def domain_vocabulary(facts: Mapping[str, dict], corpus_text: str) -> dict[str, list[str]]:
    """Per fact, the words of its device name and answer that the pretraining corpus never contains.

    These are the words only the fine-tuning data can teach (공유기, 펌웨어, 리셋 ...):
    an answer that uses them speaks the domain's language, right or wrong.
    """
    vocab = {}
    for fact_id, fact in facts.items():
        words = word_stems(fact["device"]) + word_stems(fact["answer"])
        vocab[fact_id] = [w for w in dict.fromkeys(words) if w not in corpus_text]
    return vocab


def uses_domain_terms(answer: str, terms: Iterable[str]) -> bool:
    """True when the answer contains at least one of ``terms``."""
    return any(term in answer for term in terms)


def same_answer(a: str, b: str) -> bool:
    """Consistency: two answers are the same after ``ftlab.eval.normalize_answer``."""
    from ftlab.eval import normalize_answer

    return normalize_answer(a) == normalize_answer(b)


def checklist(answer: str, paraphrase_answer: str, fact_id: str, terms: Iterable[str]) -> dict[str, bool]:
    """The seed's checklist for one question: expertise, consistency, domain terms.

    ``expertise``: the fact's key is in the answer (``ftlab.eval.fact_correct``);
    ``consistency``: the answer to a paraphrase of the same question is the same;
    ``domain_terms``: the answer uses the fact's domain vocabulary.
    """
    from ftlab.eval import fact_correct

    return {
        "expertise": bool(fact_correct(answer, fact_id)),
        "consistency": same_answer(answer, paraphrase_answer),
        "domain_terms": uses_domain_terms(answer, terms),
    }


def kb_fix_rate(answers: Sequence[str], facts: Mapping[str, dict]) -> float:
    """Share of answers that state a knowledge-base fix (contain any fact's key or alias).

    Asked about devices outside the knowledge base, such an answer is a
    confident guess: a hallucination in the seed's sense.
    """
    from ftlab.eval import key_correct

    if not answers:
        raise ValueError("no answers to score")
    keys = [(f["key"], f.get("key_aliases", ())) for f in facts.values()]
    hits = sum(any(key_correct(a, key, aliases) for key, aliases in keys) for a in answers)
    return hits / len(answers)


# ---------------------------------------------------------------------------
# Timing and step-size helpers
# ---------------------------------------------------------------------------


def seconds_per_step(model, batch: Mapping, steps: int = 5) -> float:
    """Median wall time of one forward and backward pass on ``batch`` (gradients discarded).

    Build ``batch`` with ``ftlab.sft.completion_batch``; it is moved to the
    model's device. Timed with ``ftlab.anatomy.median_seconds``, which waits
    for the GPU before stopping the clock.
    """
    from ftlab.anatomy import median_seconds

    batch = _on_device(model, batch)

    def step():
        model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)

    model.train()
    seconds = median_seconds(step, repeats=steps, device=str(model.device))
    model.eval()
    return seconds


def linear4bit_seconds(compute_dtype, tokens: int = 1024, d_in: int = 256, d_out: int = 704, repeats: int = 5) -> float:
    """Median time of a forward+backward pass through one NF4 ``Linear4bit`` layer computing in ``compute_dtype``."""
    import bitsandbytes as bnb
    import torch

    from ftlab.anatomy import median_seconds

    weight = torch.randn(d_out, d_in) / d_in**0.5
    layer = bnb.nn.Linear4bit(d_in, d_out, bias=False, compute_dtype=compute_dtype, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", compress_statistics=True)
    layer = layer.to("cpu")  # quantizes the weight
    x = torch.randn(tokens, d_in, requires_grad=True)
    return median_seconds(lambda: layer(x).float().sum().backward(), repeats=repeats)


def one_step_logit_change(model, batch: Mapping, lr: float) -> float:
    """Mean absolute change of the logits after one AdamW step of ``lr`` on ``batch``.

    With Adam every trainable entry moves by about ``lr`` in the first step,
    whatever the size of its gradient. For a fresh LoRA adapter (B = 0) the r
    columns of B all move in the direction that lowers the loss, so the
    output change grows like ``(alpha / r) * r * lr = alpha * lr``: at equal
    ``alpha / r``, a larger rank takes larger steps.
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    batch = _on_device(model, batch)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model.eval()  # no dropout: compare like with like
    with torch.no_grad():
        before = model(**inputs).logits.float()
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        after = model(**inputs).logits.float()
    mask = batch["attention_mask"].bool()
    return (after - before).abs()[mask].mean().item()
