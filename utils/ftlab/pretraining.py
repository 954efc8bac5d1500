"""Tokenizers and causal-LM pretraining, measured: the helpers of lab 04.

- Tokenizers: ``token_pieces`` (what each byte-level token stands for, readable),
  ``tokens_per_char`` (how many tokens a text costs per character),
  ``train_char_level_bpe`` (a BPE *without* the byte fallback, to show what an
  unknown token is).
- Data: ``split_documents`` (a deterministic held-out split of the corpus),
  ``token_stream`` and ``make_windows`` (the id stream cut into training windows),
  ``chat_batch`` (chat rows as one padded batch with answer-only labels).
- Evaluation: ``mean_loss`` (cross-entropy per predicted token, so perplexity is
  ``exp(mean_loss)``), ``text_loss`` (the same on raw texts through a given tokenizer),
  ``HeldOutMonitor`` (held-out loss *during* ``ftlab.tiny.pretrain``, through its ``evaluate`` hook),
  ``batch_loss_spread`` (how much one batch's loss wobbles at a given batch size).
- Fine-tuning as ``W_ft = W_pt + dW``: ``delta_weights`` and ``delta_report``
  measure each update's size and how much of its energy sits in a few singular
  directions (``energy_fraction``, ``effective_rank``), the observation LoRA builds on
  (Hu et al. 2021, arXiv:2106.09685, section 7).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import nn

from ftlab import tiny

IGNORE_INDEX = -100  # label value that cross-entropy skips (transformers' convention)


# --- tokenizers ---------------------------------------------------------------------------------

def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte <-> printable-character table, inverted: symbol in a token -> byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            symbols.append(256 + extra)
            extra += 1
    return {chr(symbol): byte for byte, symbol in zip(printable, symbols)}


def token_pieces(tokenizer, ids: Sequence[int], space: str = "▁") -> list[str]:
    """What each token of a byte-level BPE stands for, readable.

    A token that holds only part of a character (a Hangul syllable is 3 UTF-8 bytes)
    shows its bytes as ``\\xNN`` escapes instead of a replacement character; a
    leading space is shown as ``space`` (SentencePiece's word-start mark ▁).
    """
    decoder, special = _byte_level_decoder(), set(tokenizer.all_special_tokens)
    pieces = []
    for token in tokenizer.convert_ids_to_tokens(list(ids)):
        if token in special:
            pieces.append(token)
            continue
        raw = bytes(decoder[ch] for ch in token)
        pieces.append(raw.decode("utf-8", errors="backslashreplace").replace(" ", space))
    return pieces


def tokens_per_char(tokenizer, texts: Sequence[str]) -> float:
    """Tokens per non-whitespace character over ``texts`` (lower = the vocabulary covers more)."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    n_tokens = sum(len(x) for x in ids)
    n_chars = sum(len("".join(t.split())) for t in texts)
    if n_chars == 0:
        raise ValueError("texts contain no characters to measure")
    return n_tokens / n_chars


def train_char_level_bpe(texts: Iterable[str], vocab_size: int, unk_token: str = "[UNK]"):
    """A character-level BPE (no byte fallback): characters it never saw become ``unk_token``.

    Returns a raw ``tokenizers.Tokenizer``; used only to contrast with the byte-level BPE
    of ``ftlab.tiny.train_tokenizer``, which has no unknown token at all.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE(unk_token=unk_token))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[unk_token], show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    return core


# --- data ---------------------------------------------------------------------------------------

def split_documents(docs: Sequence, heldout_every: int) -> tuple[list, list]:
    """Every ``heldout_every``-th document goes to the held-out split (deterministic, disjoint)."""
    if heldout_every < 2:
        raise ValueError(f"heldout_every must be >= 2 (got {heldout_every}): 1 would hold out everything")
    train = [d for i, d in enumerate(docs) if i % heldout_every != heldout_every - 1]
    heldout = [d for i, d in enumerate(docs) if i % heldout_every == heldout_every - 1]
    return train, heldout


def document_texts(docs: Sequence[tuple[str, object]]) -> list[str]:
    """The plain text of ``ftlab.tiny.iter_documents`` items (dialogues rendered as chats)."""
    return [d if kind == "text" else tiny.render_chat(d) for kind, d in docs]


def token_stream(docs: Sequence[tuple[str, object]], tokenizer) -> list[int]:
    """All documents as one id stream, each ending with ``<|end|>`` (as ``ftlab.tiny`` builds it)."""
    return tiny._token_stream(docs, tokenizer)


def make_windows(stream: Sequence[int], seq_len: int, limit: int | None = None) -> torch.Tensor:
    """Cut the stream into consecutive windows: a (n_windows, seq_len) tensor.

    With ``limit``, keep at most that many windows, evenly spaced over the whole stream
    (the corpus lists prose before dialogues, so the first windows alone would be biased).
    """
    n = len(stream) // seq_len
    if n == 0:
        raise ValueError(f"stream of {len(stream)} tokens is shorter than one window of {seq_len}")
    windows = torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)  # (n, seq_len)
    if limit is not None and limit < n:
        windows = windows[torch.linspace(0, n - 1, limit).round().long()]
    return windows


def chat_batch(tokenizer, conversations: Sequence[Sequence[dict]], max_length: int = 256) -> dict:
    """Chats through the chat template as one right-padded batch; labels only on answer tokens."""
    rows = []
    for messages in conversations:
        enc = tokenizer.apply_chat_template(
            list(messages), return_assistant_tokens_mask=True, return_dict=True, truncation=True, max_length=max_length
        )
        labels = [t if m else IGNORE_INDEX for t, m in zip(enc["input_ids"], enc["assistant_masks"])]
        rows.append((enc["input_ids"], labels))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])  # (batch, width)
    labels = torch.tensor([lab + [IGNORE_INDEX] * (width - len(lab)) for _, lab in rows])
    attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# --- evaluation ---------------------------------------------------------------------------------

@torch.no_grad()
def mean_loss(model, windows: torch.Tensor, batch_size: int = 32) -> float:
    """Cross-entropy per predicted token (nats) of a causal LM over (n, seq_len) windows.

    Each window predicts its tokens 2..seq_len from the ones before, so perplexity is
    ``math.exp(mean_loss(...))``.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size].to(model.device)  # (batch, seq_len)
        n = batch.numel() - batch.shape[0]  # predicted tokens: one fewer per window
        total += model(input_ids=batch, labels=batch).loss.item() * n
        count += n
    model.train(was_training)
    return total / count


@torch.no_grad()
def text_loss(model, tokenizer, texts: Sequence[str]) -> float:
    """Cross-entropy per predicted token (nats) of ``model`` on ``texts`` encoded by ``tokenizer``.

    Pass a *different* tokenizer than the model's to see what wrong ids cost.
    """
    model.eval()
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]], device=model.device)
        if ids.shape[1] < 2:
            continue
        total += model(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    if count == 0:
        raise ValueError("no text of at least two tokens to score")
    return total / count


def perplexity(loss: float) -> float:
    """Perplexity of a mean cross-entropy in nats: ``exp(loss)``, the effective number of choices."""
    return math.exp(loss)


class HeldOutMonitor(nn.Module):
    """Record a held-out loss while ``ftlab.tiny.pretrain`` trains ``model``.

    Preferred: pass ``evaluate`` as the hook, which ``pretrain`` calls at step 0, every
    ``eval_every`` steps and after the last step::

        monitor = HeldOutMonitor(model, heldout_windows, every=25)
        tiny.pretrain(model, stream, config, evaluate=monitor.evaluate, eval_every=monitor.every)

    Each call appends ``{"step": updates_done, "loss": ...}`` to ``self.log``. The
    monitor can also wrap the model (``pretrain(monitor, ...)``): then every ``every``
    forward calls it evaluates first, and ``evaluate(step)`` must be called once more
    after training for the final point.
    """

    def __init__(self, model: nn.Module, windows: torch.Tensor, every: int, batch_size: int = 32):
        super().__init__()
        self.model, self.windows, self.every, self.batch_size = model, windows, every, batch_size
        self.calls = 0
        self.log: list[dict] = []

    def evaluate(self, step: int) -> float:
        loss = mean_loss(self.model, self.windows, self.batch_size)
        self.log.append({"step": step, "loss": round(loss, 4)})
        return loss

    def forward(self, **inputs):
        if self.calls % self.every == 0:
            self.evaluate(self.calls)
        self.calls += 1
        # pretrain() builds its batches on the CPU; follow the model to its device (GPU profiles)
        return self.model(**{key: value.to(self.model.device) for key, value in inputs.items()})


@torch.no_grad()
def batch_loss_spread(model, windows: torch.Tensor, batch_size: int, n_batches: int, seed: int = 0) -> list[float]:
    """Mean loss of ``n_batches`` random batches of ``batch_size`` windows (same weights).

    The spread of these numbers is the noise a batch of that size puts into every
    optimizer step: smaller batches give a noisier estimate of the full-data loss.
    """
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    losses = []
    for _ in range(n_batches):
        batch = windows[torch.randint(len(windows), (batch_size,), generator=generator)].to(model.device)
        losses.append(model(input_ids=batch, labels=batch).loss.item())
    return losses


# --- W_ft = W_pt + dW ---------------------------------------------------------------------------

def delta_weights(base: nn.Module, tuned: nn.Module, include: Sequence[str] = ("_proj",)) -> dict:
    """``{name: (W_pt, dW)}`` for every 2-D weight whose name contains one of ``include``."""
    tuned_params = dict(tuned.named_parameters())
    out = {}
    for name, w in base.named_parameters():
        if w.ndim == 2 and any(key in name for key in include):
            out[name] = (w.detach().float(), (tuned_params[name].detach().float() - w.detach().float()))
    if not out:
        raise ValueError(f"no 2-D weights match {list(include)}: check the module names")
    return out


def energy_fraction(matrix: torch.Tensor, k: int) -> float:
    """Share of the squared Frobenius norm held by the top-``k`` singular values (1.0 = rank <= k)."""
    s2 = torch.linalg.svdvals(matrix.float()) ** 2
    return (s2[:k].sum() / s2.sum()).item()


def energy_curve(matrix: torch.Tensor) -> list[float]:
    """Cumulative energy share of the top 1, 2, ... singular values."""
    s2 = torch.linalg.svdvals(matrix.float()) ** 2
    return (s2.cumsum(0) / s2.sum()).tolist()


def effective_rank(matrix: torch.Tensor, energy: float = 0.9) -> int:
    """Smallest k whose top-k singular values hold ``energy`` of the squared norm."""
    curve = torch.tensor(energy_curve(matrix))
    return int((curve < energy).sum().item()) + 1


def delta_report(deltas: dict, k: int, seed: int = 0) -> list[dict]:
    """Per weight: size of dW relative to W, and the top-``k`` energy share of dW, W and noise.

    The noise column is a Gaussian matrix of the same shape: what "no low-rank structure" looks like.
    """
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for name, (w, dw) in deltas.items():
        noise = torch.randn(w.shape, generator=generator)
        rows.append({
            "weight": name.removeprefix("model.").replace("layers.", "L").replace(".weight", ""),
            "shape": tuple(w.shape),
            "dW/W (norm)": (dw.norm() / w.norm()).item(),
            f"dW top-{k} energy": energy_fraction(dw, k),
            f"W top-{k} energy": energy_fraction(w, k),
            f"noise top-{k} energy": energy_fraction(noise, k),
            "dW rank@90%": effective_rank(dw, 0.9),
            "W rank@90%": effective_rank(w, 0.9),
        })
    return rows
