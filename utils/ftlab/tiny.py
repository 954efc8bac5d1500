"""The offline tiny model: a byte-level BPE tokenizer and a small Llama.

Both are trained here, from the corpus shipped in ``data/``, so that every lab
runs on a laptop CPU with no network. The build is deterministic (fixed seeds,
a fixed document order) and cached in ``.cache/ftlab/tiny``; it is rebuilt
only when the corpus, the config or this file's build version changes.

Commands::

    python -m ftlab.tiny build            # build (or reuse) the cached model
    python -m ftlab.tiny build --force    # rebuild from scratch
    python -m ftlab.tiny info             # sizes, fingerprint, final loss
    python -m ftlab.tiny generate "질문"   # chat with it

In a notebook: ``model, tokenizer = ftlab.tiny.load()``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from ftlab.paths import CACHE_DIR, DATA_DIR, build_lock

BUILD_VERSION = "1"  # bump when the build procedure changes

# Special tokens. The chat template wraps every turn as
#   <|user|>\n{content}<|end|>\n   and   <|assistant|>\n{content}<|end|>\n
# and generation stops at <|end|>.
BOS, END, PAD = "<|bos|>", "<|end|>", "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = [PAD, BOS, END, *ROLE_TOKENS]

# {% generation %} marks the assistant tokens, so trainers can compute the
# loss on answers only (transformers' return_assistant_tokens_mask).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyConfig:
    """Sizes and training budget of the tiny model (defaults: about 3 M parameters)."""

    vocab_size: int = 4096  # BPE vocabulary, special tokens included
    hidden_size: int = 256  # embedding width (d_model)
    intermediate_size: int = 704  # SwiGLU width: about 8/3 * hidden (682.7), rounded up to a multiple of 32 (see below)
    num_hidden_layers: int = 4  # decoder blocks
    num_attention_heads: int = 8  # query heads (head_dim = 32)
    num_key_value_heads: int = 4  # GQA: two query heads share one key/value head
    max_position_embeddings: int = 512  # longest sequence RoPE is set up for
    seq_len: int = 128  # tokens per pretraining window
    batch_size: int = 16  # windows per optimizer step (2,048 tokens)
    steps: int = 300  # optimizer steps: about 600K tokens, 2-3 min on 2 CPU cores
    learning_rate: float = 2e-3  # peak LR; tiny models trained from scratch tolerate it
    warmup_steps: int = 30  # linear warmup, then cosine decay to 10% of the peak
    weight_decay: float = 0.1
    general_repeats: int = 4  # data/general Q&A appears this many times, so the base model knows it
    seed: int = 0


def corpus_files(data_dir: Path = DATA_DIR) -> list[Path]:
    """The files the tiny model is pretrained on, in a fixed order."""
    files = sorted((data_dir / "pretrain").glob("*.txt"))
    files += sorted((data_dir / "pretrain").glob("*.jsonl"))
    files += sorted((data_dir / "general").glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"no pretraining corpus under {data_dir / 'pretrain'}: expected *.txt and *.jsonl files "
            "(the course ships them in data/pretrain; see data/README.md)"
        )
    return files


def _row_to_messages(row: dict, path: Path, line_no: int) -> list[dict]:
    if "messages" in row:
        return row["messages"]
    if "instruction" in row and "output" in row:
        user = row["instruction"] if not row.get("input") else f"{row['instruction']}\n{row['input']}"
        return [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    raise ValueError(f"{path} line {line_no}: expected 'messages' or 'instruction'/'output' fields")


def iter_documents(files: Sequence[Path]) -> Iterator[tuple[str, object]]:
    """Yield ("text", str) for prose lines and ("chat", messages) for dialogues."""
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                line = line.strip()
                if not line:
                    continue
                if path.suffix == ".txt":
                    yield "text", line
                else:
                    yield "chat", _row_to_messages(json.loads(line), path, line_no)


def load_documents(files: Sequence[Path], general_repeats: int = 1) -> list[tuple[str, object]]:
    """All pretraining documents; files under ``general/`` are repeated ``general_repeats`` times.

    The general Q&A is a small share of the corpus; repeating it makes the base model
    know those facts, which the forgetting (replay) experiments of lab 05 measure.
    """
    docs: list[tuple[str, object]] = []
    for path in files:
        file_docs = list(iter_documents([path]))
        docs += file_docs * (general_repeats if path.parent.name == "general" else 1)
    return docs


def render_chat(messages: Sequence[dict]) -> str:
    """The chat template in plain Python (used before a tokenizer exists)."""
    parts = [f"<|{m['role']}|>\n{m['content']}{END}\n" for m in messages]
    return "".join(parts)


def fingerprint(config: TinyConfig, files: Sequence[Path]) -> str:
    """Hash of everything the build depends on."""
    digest = hashlib.sha256()
    digest.update(BUILD_VERSION.encode())
    digest.update(json.dumps(asdict(config), sort_keys=True).encode())
    digest.update(CHAT_TEMPLATE.encode())
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=END,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=TinyConfig.max_position_embeddings,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_llama_config(config: TinyConfig, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        hidden_act="silu",
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _token_stream(docs: Sequence[tuple[str, object]], tokenizer) -> list[int]:
    """All documents as one id stream; each document ends with <|end|>."""
    texts = [d if kind == "text" else render_chat(d) for kind, d in docs]
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        if not ids or ids[-1] != tokenizer.eos_token_id:
            stream.append(tokenizer.eos_token_id)
    return stream


def _lr_lambda(config: TinyConfig):
    def schedule(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return schedule


def pretrain(
    model,
    stream: list[int],
    config: TinyConfig,
    log_every: int = 50,
    evaluate: Callable[[int], object] | None = None,
    eval_every: int | None = None,
    device: str | None = None,
) -> list[dict]:
    """Causal-LM pretraining on random windows of the stream. Returns the loss log.

    ``evaluate(step)``, when given, is called with the number of optimizer steps done
    before step 0, every ``eval_every`` steps (default ``log_every``) and after the last
    step; it may record a held-out loss (``ftlab.pretraining.HeldOutMonitor.evaluate``).
    It runs outside the training graph and draws no random numbers from the batch
    generator, so the training itself is the same with or without it.
    ``device`` (e.g. ``"cuda"``) moves the model there and each batch with it; by
    default batches go to the model's device (the CPU for the course build).
    """
    import torch

    data = torch.tensor(stream, dtype=torch.long)
    n_windows = (len(data) - 1) // config.seq_len
    if n_windows < config.batch_size:
        raise ValueError(f"corpus too small: {len(data)} tokens give {n_windows} windows of {config.seq_len}")
    windows = data[: n_windows * config.seq_len].view(n_windows, config.seq_len)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, betas=(0.9, 0.95), weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    if device is not None:
        model.to(device)
    target = next(model.parameters()).device
    eval_every = eval_every or log_every
    model.train()
    log: list[dict] = []
    order = torch.randperm(n_windows, generator=generator)
    cursor = 0
    for step in range(config.steps):
        if evaluate is not None and step % eval_every == 0:
            evaluate(step)
            model.train()
        if cursor + config.batch_size > n_windows:  # new epoch, new shuffle
            order, cursor = torch.randperm(n_windows, generator=generator), 0
        batch = windows[order[cursor : cursor + config.batch_size]].to(target)  # (batch, seq_len)
        cursor += config.batch_size
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % log_every == 0 or step == config.steps - 1:
            log.append({"step": step + 1, "loss": round(loss.item(), 4), "lr": scheduler.get_last_lr()[0]})
    if evaluate is not None:
        evaluate(config.steps)
    model.eval()
    return log


def build(
    out_dir: Path | None = None,
    config: TinyConfig = TinyConfig(),
    data_dir: Path = DATA_DIR,
    verbose: bool = True,
) -> Path:
    """Train tokenizer and model from the corpus and save them to ``out_dir``."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    out_dir = Path(out_dir) if out_dir else default_dir()
    files = corpus_files(data_dir)
    started = time.perf_counter()
    docs = load_documents(files, config.general_repeats)
    texts = [d if kind == "text" else render_chat(d) for kind, d in docs]
    tokenizer = train_tokenizer(texts, config.vocab_size)
    t_tok = time.perf_counter() - started
    stream = _token_stream(docs, tokenizer)

    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(build_llama_config(config, tokenizer))
    log = pretrain(model, stream, config)
    elapsed = time.perf_counter() - started

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id
    )
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    info = {
        "fingerprint": fingerprint(config, files),
        "config": asdict(config),
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus_files": [str(p.relative_to(data_dir.parent)) for p in files],
        "corpus_documents": len(docs),
        "corpus_tokens": len(stream),
        "loss_log": log,
    }
    (tmp / "ftlab_tiny.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    timing = {"tokenizer_seconds": round(t_tok, 1), "total_seconds": round(elapsed, 1), "threads": torch.get_num_threads()}
    (tmp / "build_timing.json").write_text(json.dumps(timing) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    if verbose:
        print(
            f"tiny model: {info['parameters']:,} parameters, {len(stream):,} corpus tokens, "
            f"loss {log[0]['loss']} -> {log[-1]['loss']} in {elapsed:.0f} s -> {out_dir}"
        )
    return out_dir


def default_dir() -> Path:
    return CACHE_DIR / "tiny"


def info(path: Path | None = None) -> dict:
    """The build record (config, fingerprint, loss log) of a built model."""
    path = Path(path) if path else default_dir()
    return json.loads((path / "ftlab_tiny.json").read_text())


def is_current(path: Path | None = None, config: TinyConfig = TinyConfig(), data_dir: Path = DATA_DIR) -> bool:
    path = Path(path) if path else default_dir()
    try:
        return info(path)["fingerprint"] == fingerprint(config, corpus_files(data_dir))
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return False


def ensure_built(path: Path | None = None, verbose: bool = True) -> Path:
    """Build the default tiny model unless an up-to-date one is cached."""
    path = Path(path) if path else default_dir()
    if is_current(path):
        return path
    with build_lock(path):  # another process may be building it right now
        if not is_current(path):
            if verbose:
                print("building the tiny model (once; about 2-3 minutes on 2 CPU cores) ...")
            build(path, verbose=verbose)
    return path


def load_tokenizer(path: Path | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ensure_built(path, verbose=False) if path is None else path)


def load(path: Path | None = None, dtype: str = "float32"):
    """Return ``(model, tokenizer)`` of the tiny model, building it if needed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ensure_built(path) if path is None else Path(path)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
    model.eval()
    return model, tokenizer


def chat(model, tokenizer, question: str, max_new_tokens: int = 64) -> str:
    """Greedy answer of ``model`` to one user turn, through the chat template."""
    import torch

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlab.tiny", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build the tiny model (reused when up to date)")
    p_build.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    p_build.add_argument("--out", type=Path, default=None, help="output folder (default: the cache)")
    p_build.add_argument("--steps", type=int, default=None, help="override the number of pretraining steps")
    sub.add_parser("info", help="print the build record")
    p_gen = sub.add_parser("generate", help="answer one question with the tiny model")
    p_gen.add_argument("question")
    args = parser.parse_args(argv)

    if args.command == "build":
        config = TinyConfig() if args.steps is None else TinyConfig(steps=args.steps)
        out = args.out or default_dir()
        if not args.force and args.steps is None:
            was_current = is_current(out)
            ensure_built(out)
            state = "up to date" if was_current else "built"
            print(f"tiny model is {state}: {out} (fingerprint {info(out)['fingerprint']})")
            return 0
        build(out, config)
        return 0
    if args.command == "info":
        record = info()
        record["loss_log"] = [record["loss_log"][0], record["loss_log"][-1]]
        print(json.dumps(record, indent=1, ensure_ascii=False))
        return 0
    model, tokenizer = load()
    print(chat(model, tokenizer, args.question))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
