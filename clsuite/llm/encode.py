"""Text examples → token ids: the prompt format, training encodings and padded batches.

Prompt: ``"Question: {prompt}\\n[Options: a | b | …\\n]Answer:"``; target ``" {answer}"`` +
EOS. Only target tokens carry labels (prompt tokens are -100), so the loss is the answer's
mean token cross-entropy (nats per answer token).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch


@dataclass(frozen=True)
class Encoded:
    """One training example: ``key`` = (task, id), ``input_ids``/``labels`` of equal length."""

    key: tuple[str, str]
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


def prompt_text(prompt: str, choices) -> str:
    opts = f"Options: {' | '.join(map(str, choices))}\n" if choices is not None and len(choices) else ""
    return f"Question: {prompt}\n{opts}Answer:"


def encode_example(tokenizer, task: str, ex_id: str, prompt: str, choices, answer: str, max_length: int) -> Encoded:
    p = tokenizer(prompt_text(prompt, choices), add_special_tokens=False)["input_ids"]
    a = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    a = a[: max_length - 1]
    p = p[-(max_length - len(a)):]  # keep the end of a long prompt (the question)
    return Encoded((task, ex_id), tuple(p + a), tuple([-100] * len(p) + a))


def encode_table(tokenizer, df: pd.DataFrame, max_length: int) -> list[Encoded]:
    """Encode every row of a text table (clsuite.data.text.prepared_table)."""
    return [encode_example(tokenizer, r.task, r.id, r.prompt, r.choices, r.answer, max_length)
            for r in df.itertuples(index=False)]


def encode_documents(tokenizer, df: pd.DataFrame, max_length: int) -> list[Encoded]:
    """Each row's prompt as one plain-text document (no template, no answer; every label -100),
    its first ``max_length`` tokens: the background corpus of sparse memory finetuning."""
    out = []
    for r in df.itertuples(index=False):
        ids = tokenizer(r.prompt, add_special_tokens=False)["input_ids"][:max_length] or [tokenizer.eos_token_id]
        out.append(Encoded((r.task, r.id), tuple(ids), tuple([-100] * len(ids))))
    return out


def collate(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels, each (B, L) int64."""
    n = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        k = len(e.input_ids)
        ids[i, :k] = torch.tensor(e.input_ids)
        labels[i, :k] = torch.tensor(e.labels)
        mask[i, :k] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """The positions ``t`` (K,) int64 whose next token ``t + 1`` is labelled in some row of
    ``labels`` (B, L): the only positions whose logits enter the loss (a causal LM predicts token
    ``t + 1`` at ``t``). Prompt and padding positions carry -100, so K is about the answer length
    times the spread of the prompts' lengths, far below L."""
    return (labels[:, 1:] != -100).any(0).nonzero().flatten()


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy (B,) in nats over the labelled targets, token accuracy (B,)) of logits
    (B, K, V) predicting ``targets`` (B, K) (-100: not scored)."""
    mask = targets != -100
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.clamp_min(0), reduction="none")
    count = mask.sum(1).clamp_min(1)
    loss = (ce * mask).sum(1) / count
    acc = ((logits.argmax(-1) == targets) & mask).sum(1) / count
    return loss, acc.detach()


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean answer-token cross-entropy (B,) in nats, answer-token accuracy (B,)) of logits (B, L, V)
    of every position (:func:`token_loss` of the shifted labels)."""
    return token_loss(logits[:, :-1], labels[:, 1:])
