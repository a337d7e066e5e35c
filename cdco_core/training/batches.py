"""Training batches: tokenisation and the :class:`Batch` every method's ``loss_terms`` receives.

Row layout. A batch has ``B`` rows (examples). For every task type except multiple choice one row is one
sequence, so ``input_ids`` is (B, T). A multiple-choice batch holds only multiple-choice rows, each padded to
``C`` options; its sequences are the (question, option) pairs in row-major order, ``input_ids`` (B*C, T), and
``choice_mask`` (B, C) marks the options that exist. Mixing multiple-choice and other rows in one batch is
refused (:meth:`Batch.concat`), because their sequences do not line up with their rows.

Contrastive keys: ``key = task_index * KEY_STRIDE + label`` for tasks with class labels, so two rows share a
key exactly when they share task and label (a positive pair); regression and multiple-choice rows get -1
(never an anchor, still an in-batch negative).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

KEY_STRIDE = 1_000_003  # > any label count, so (task, label) -> key is one-to-one
NO_KEY_TYPES = ("regression", "multiple_choice")


@dataclass
class Example:
    """One canonical row of one task, ready to be collated."""

    task: str
    task_index: int  # position of the task in the model's task_names
    task_type: str
    example_id: str
    text_a: str
    text_b: str = ""
    choices: list[str] | None = None
    label: float | int = 0


@dataclass
class Batch:
    """A collated batch (see the module docstring for the row layout).

    Attributes:
        input_ids, attention_mask, token_type_ids: (N, T) long, N = B (or B*C for multiple choice).
        task_ids: (B,) long index into the model's ``task_names``.
        labels: (B,) long (class / option index), or float for regression.
        tasks: task name per row.
        keys: (B,) long contrastive keys (-1: not an anchor).
        example_ids: canonical example id per row (used to look up the row's ODMS hard negatives).
        task_types: task type per row.
        negatives: optional (B, K, H) pooled encoder embeddings of each row's hard negatives (no grad).
        choice_mask: (B, C) bool for multiple-choice batches, else None.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    task_ids: torch.Tensor
    labels: torch.Tensor
    tasks: list[str]
    keys: torch.Tensor
    example_ids: list[str] = field(default_factory=list)
    task_types: list[str] = field(default_factory=list)
    negatives: torch.Tensor | None = None
    choice_mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def is_multiple_choice(self) -> bool:
        return self.choice_mask is not None

    def to(self, device: torch.device | str) -> Batch:
        """A copy with every tensor on ``device``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in values.items()})

    def select(self, index: Sequence[int] | torch.Tensor) -> Batch:
        """The rows ``index`` (in that order) as a new batch; multiple-choice rows keep all their options."""
        idx = torch.as_tensor(index, dtype=torch.long)
        rows = idx.tolist()
        if self.choice_mask is not None:
            n_opt = self.choice_mask.shape[1]
            seq = (idx[:, None] * n_opt + torch.arange(n_opt)[None, :]).reshape(-1)  # (B'*C,)
        else:
            seq = idx
        return Batch(
            input_ids=self.input_ids[seq],
            attention_mask=self.attention_mask[seq],
            token_type_ids=self.token_type_ids[seq],
            task_ids=self.task_ids[idx],
            labels=self.labels[idx],
            tasks=[self.tasks[i] for i in rows],
            keys=self.keys[idx],
            example_ids=[self.example_ids[i] for i in rows] if self.example_ids else [],
            task_types=[self.task_types[i] for i in rows] if self.task_types else [],
            negatives=self.negatives[idx] if self.negatives is not None else None,
            choice_mask=self.choice_mask[idx] if self.choice_mask is not None else None,
        )

    @staticmethod
    def concat(batches: Sequence[Batch], pad_token_id: int = 0) -> Batch:
        """Stack batches row-wise (sequences padded to the longest). All or none must be multiple choice.

        Raises:
            ValueError: multiple-choice and other batches mixed, or options counts differ.
        """
        if not batches:
            raise ValueError("Batch.concat needs at least one batch")
        mc = {b.is_multiple_choice for b in batches}
        if len(mc) > 1:
            raise ValueError("cannot concatenate multiple-choice and other batches: their sequences differ")
        if mc == {True} and len({b.choice_mask.shape[1] for b in batches}) > 1:
            raise ValueError("cannot concatenate multiple-choice batches with different option counts")
        t = max(b.input_ids.shape[1] for b in batches)

        def pad(x: torch.Tensor, value: int) -> torch.Tensor:
            return torch.nn.functional.pad(x, (0, t - x.shape[1]), value=value)

        neg = [b.negatives for b in batches]
        return Batch(
            input_ids=torch.cat([pad(b.input_ids, pad_token_id) for b in batches]),
            attention_mask=torch.cat([pad(b.attention_mask, 0) for b in batches]),
            token_type_ids=torch.cat([pad(b.token_type_ids, 0) for b in batches]),
            task_ids=torch.cat([b.task_ids for b in batches]),
            labels=_cat_labels([b.labels for b in batches]),
            tasks=[x for b in batches for x in b.tasks],
            keys=torch.cat([b.keys for b in batches]),
            example_ids=[x for b in batches for x in b.example_ids],
            task_types=[x for b in batches for x in b.task_types],
            negatives=torch.cat(neg) if all(n is not None for n in neg) else None,
            choice_mask=torch.cat([b.choice_mask for b in batches]) if mc == {True} else None,
        )


def _cat_labels(labels: list[torch.Tensor]) -> torch.Tensor:
    # a mixed batch (classification + regression) keeps float labels; task_loss casts per task
    if len({x.dtype for x in labels}) > 1:
        return torch.cat([x.float() for x in labels])
    return torch.cat(labels)


def tokenize(
    tokenizer: Any,
    texts_a: Sequence[str],
    texts_b: Sequence[str] | None = None,
    max_length: int = 128,
) -> dict[str, torch.Tensor]:
    """Tokenise single texts or pairs, padded to the longest in the call and truncated to ``max_length``.

    ``texts_b`` that is None or all empty strings means single texts (no second segment), matching how
    ODMS embeds them.

    Returns:
        {"input_ids", "attention_mask", "token_type_ids"}: (N, T) long tensors.
    """
    pairs = texts_b is not None and any(t for t in texts_b)
    enc = tokenizer(
        list(texts_a),
        list(texts_b) if pairs else None,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_token_type_ids=True,
    )
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def contrastive_key(task_index: int, task_type: str, label: float | int) -> int:
    """``task_index * KEY_STRIDE + label``; -1 for task types without class labels."""
    if task_type in NO_KEY_TYPES:
        return -1
    return task_index * KEY_STRIDE + int(label)


def collate(examples: Sequence[Example], tokenizer: Any, max_length: int) -> Batch:
    """Tokenise and stack examples into a :class:`Batch`.

    Raises:
        ValueError: empty input, or multiple-choice examples mixed with others.
    """
    if not examples:
        raise ValueError("collate needs at least one example")
    mc = {e.task_type == "multiple_choice" for e in examples}
    if len(mc) > 1:
        raise ValueError("a batch holds either only multiple-choice rows or none")
    regression = all(e.task_type == "regression" for e in examples)
    labels = torch.tensor([e.label for e in examples], dtype=torch.float32 if regression else torch.long)
    if mc == {True}:
        n_opt = max(len(e.choices or []) for e in examples)
        texts_a, texts_b, mask = [], [], []
        for e in examples:
            opts = list(e.choices or [])
            mask.append([True] * len(opts) + [False] * (n_opt - len(opts)))
            opts += [""] * (n_opt - len(opts))  # padded options are masked out of the scores
            texts_a += [e.text_a] * n_opt
            texts_b += opts
        enc = tokenize(tokenizer, texts_a, texts_b, max_length)
        choice_mask = torch.tensor(mask, dtype=torch.bool)  # (B, C)
    else:
        enc = tokenize(tokenizer, [e.text_a for e in examples], [e.text_b for e in examples], max_length)
        choice_mask = None
    if any(e.task_type == "regression" for e in examples) and not regression:
        labels = torch.tensor([float(e.label) for e in examples], dtype=torch.float32)
    return Batch(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        token_type_ids=enc["token_type_ids"],
        task_ids=torch.tensor([e.task_index for e in examples], dtype=torch.long),
        labels=labels,
        tasks=[e.task for e in examples],
        keys=torch.tensor([contrastive_key(e.task_index, e.task_type, e.label) for e in examples]),
        example_ids=[e.example_id for e in examples],
        task_types=[e.task_type for e in examples],
        choice_mask=choice_mask,
    )
