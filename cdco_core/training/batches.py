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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

KEY_STRIDE = 1_000_003  # > any label count, so (task, label) -> key is one-to-one
# Batches per length-bucketing window (the config's ``train.length_bucket_batches`` default). Short-text tasks
# padded to the longest row of a random batch are about half padding (demo: 50% real tokens); sorting windows
# of 16 batches by length lifts that to ~90% and the step cost falls with it.
LENGTH_BUCKET_BATCHES = 16
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

    def trimmed(self) -> Batch:
        """This batch without its trailing all-padding token columns (e.g. after :meth:`select` kept short rows).

        The tokenizer pads on the right and attention masks the padding out, so the encoding of every row is
        unchanged; only the work on padding goes.
        """
        used = self.attention_mask.any(dim=0).nonzero()
        t = int(used.max()) + 1 if len(used) else 1
        if t == self.input_ids.shape[1]:
            return self
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for k in ("input_ids", "attention_mask", "token_type_ids"):
            values[k] = values[k][:, :t]
        return Batch(**values)

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


# ------------------------------------------------------------------------------------ batch sources
def task_examples(task: Any, task_index: int, split: str = "train") -> list[Example]:
    """The rows of ``task.splits[split]`` (a canonical frame) as :class:`Example` objects."""
    df = task.splits[split]
    has_choices = "choices" in df.columns
    out = []
    for row in df.itertuples(index=False):
        out.append(Example(
            task=task.name, task_index=task_index, task_type=task.spec.type, example_id=str(row.example_id),
            text_a=str(row.text_a), text_b=str(row.text_b or ""),
            choices=[str(c) for c in row.choices] if has_choices and row.choices is not None else None,
            label=float(row.label) if task.spec.type == "regression" else int(row.label),
        ))
    return out


class TaskStream:
    """Epochs without replacement over one task's rows, in a seeded order per epoch.

    The order of epoch ``e`` is ``default_rng([seed, task_index, e]).permutation(n)``, so the whole state is
    (epoch, position) and, with length bucketing (:meth:`next_batch`), the window's batches not yet served:
    exact to checkpoint.
    """

    def __init__(self, n_rows: int, seed: int, task_index: int) -> None:
        if n_rows < 1:
            raise ValueError(f"task {task_index} has no training rows")
        self.n, self.seed, self.task_index = n_rows, seed, task_index
        self.epoch, self.pos = 0, 0
        self._perm = self._order(0)
        self._queue: list[list[int]] = []  # length-bucketed batches of the current window, not yet served

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, self.task_index, epoch]).permutation(self.n)

    def take(self, k: int) -> list[int]:
        """The next ``k`` row indices (crossing into the next epoch when this one ends)."""
        out: list[int] = []
        while len(out) < k:
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._order(self.epoch)
            step = min(k - len(out), self.n - self.pos)
            out += self._perm[self.pos:self.pos + step].tolist()
            self.pos += step
        return out

    def next_batch(self, k: int, lengths: Callable[[list[int]], list[int]] | None = None,
                   bucket_batches: int = 1) -> list[int]:
        """Row indices of the next batch of ``k`` rows, length-bucketed when ``bucket_batches`` > 1.

        Bucketing takes the next ``k * bucket_batches`` rows of the stream (a window: still every row once per
        epoch; cut at the epoch's end, so no batch holds a row twice), sorts them by token length
        (``lengths(rows)``, stable), cuts them into batches of ``k`` and serves
        those in an order seeded by the window's start ``(seed, task, epoch, pos)``. Rows of similar length share
        a batch, so dynamic padding pads little; which rows share a batch is no longer independent of length.
        """
        if bucket_batches <= 1 or lengths is None:
            return self.take(k)
        if not self._queue:
            left = self.n - self.pos if self.pos < self.n else self.n  # rows of this epoch not yet drawn
            if left < k:  # the epoch's tail: one batch crossing into the next epoch, as without buckets
                return self.take(k)
            # a window never crosses an epoch: a small task would otherwise put copies of one row in one batch
            size = min(k * bucket_batches, left - left % k)
            start = (self.epoch, self.pos)
            rows = self.take(size)
            lens = lengths(rows)
            ranked = [rows[i] for i in sorted(range(len(rows)), key=lambda i: (lens[i], i))]
            chunks = [ranked[i:i + k] for i in range(0, len(ranked), k)]
            order = np.random.default_rng([self.seed, self.task_index, *start, 104729]).permutation(len(chunks))
            self._queue = [chunks[i] for i in order]
        return self._queue.pop(0)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos, "queue": [list(b) for b in self._queue]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._order(self.epoch)
        self._queue = [[int(i) for i in b] for b in state.get("queue", [])]


class BatchSource:
    """Draws training batches: a task sampler picks the task, that task's stream gives the rows.

    With a batch-level sampler (``sampler.batch_level``) one candidate batch is drawn from every task, every
    candidate row is scored without gradients (``sampler.score_rows(model, batch)`` when the sampler defines
    it, else :func:`normalised_entropy`), and ``sampler.select(task_of_row, scores, batch_size)`` picks the rows.

    ``length_bucket_batches`` > 1 draws each task's batches from length-sorted windows of that many batches
    (:meth:`TaskStream.next_batch`); 1 = the stream's order as drawn.

    State (``state_dict``): the numpy generator, the sampler and every stream; all JSON-able.
    """

    def __init__(self, examples: list[list[Example]], sampler: Any, batch_size: int, tokenizer: Any,
                 max_length: int, seed: int, device: str | torch.device = "cpu",
                 length_bucket_batches: int = LENGTH_BUCKET_BATCHES) -> None:
        if length_bucket_batches < 1:
            from cdco_core.errors import ConfigError

            raise ConfigError(f"train.length_bucket_batches must be >= 1, got {length_bucket_batches}")
        self.length_bucket_batches = length_bucket_batches
        self._lengths: list[dict[int, int]] = [{} for _ in examples]  # task -> row -> tokens (memo)
        self.examples = examples
        self.sampler = sampler
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.device = device
        self.rng = np.random.default_rng([seed, 7919])  # 7919: keeps this stream apart from others seeded by seed
        self.streams = [TaskStream(len(ex), seed, i) for i, ex in enumerate(examples)]
        sampler.setup([len(ex) for ex in examples])
        if getattr(sampler, "batch_level", False):
            mc = {ex[0].task_type == "multiple_choice" for ex in examples}
            if len(mc) > 1:
                from cdco_core.errors import ConfigError

                raise ConfigError(f"train.sampler {sampler.name!r} selects rows across tasks, which cannot mix "
                                  "multiple-choice and other training tasks in one batch")

    def _rows(self, task: int, rows: list[int]) -> list[Example]:
        return [self.examples[task][i] for i in rows]

    def token_lengths(self, task: int, rows: list[int]) -> list[int]:
        """Tokens of each row after truncation (multiple choice: with its longest option), memoised."""
        memo = self._lengths[task]
        todo = [i for i in dict.fromkeys(rows) if i not in memo]
        if todo:
            ex = self._rows(task, todo)
            second = [max(e.choices, key=len) if e.choices else e.text_b for e in ex]
            pairs = any(second)
            enc = self.tokenizer([e.text_a for e in ex], second if pairs else None, truncation=True,
                                 max_length=self.max_length, return_attention_mask=False,
                                 return_token_type_ids=False)
            memo.update(zip(todo, (len(ids) for ids in enc["input_ids"]), strict=True))
        return [memo[i] for i in rows]

    def _take(self, task: int) -> list[int]:
        return self.streams[task].next_batch(self.batch_size, lambda rows: self.token_lengths(task, rows),
                                             self.length_bucket_batches)

    def next_examples(self) -> list[Example]:
        """Rows of the next batch for a task-level sampler."""
        task = self.sampler.next_task(self.rng)
        return self._rows(task, self._take(task))

    def next_batch(self, model: Any = None) -> Batch:
        """The next training batch (a batch-level sampler needs ``model`` to score candidates)."""
        if not getattr(self.sampler, "batch_level", False):
            return collate(self.next_examples(), self.tokenizer, self.max_length).to(self.device)
        cands = [self._rows(t, self._take(t)) for t in range(len(self.streams))]
        batch = collate([e for c in cands for e in c], self.tokenizer, self.max_length).to(self.device)
        scorer = getattr(self.sampler, "score_rows", None)
        with torch.no_grad():
            scores = scorer(model, batch) if scorer is not None else normalised_entropy(model, batch)
        keep = self.sampler.select(batch.task_ids.cpu().numpy(), np.asarray(scores), self.batch_size)
        return batch.select(torch.as_tensor(np.sort(keep), device=batch.task_ids.device)).trimmed()

    def plan(self, n_batches: int) -> list[list[str]] | None:
        """Example ids of the next ``n_batches`` batches without consuming them; None for batch-level samplers
        (their choice depends on the model)."""
        if getattr(self.sampler, "batch_level", False):
            return None
        saved = self.state_dict()
        try:
            return [[e.example_id for e in self.next_examples()] for _ in range(n_batches)]
        finally:
            self.load_state_dict(saved)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "sampler": self.sampler.state_dict(),
                "streams": [s.state_dict() for s in self.streams]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.sampler.load_state_dict(state["sampler"])
        for s, st in zip(self.streams, state["streams"], strict=True):
            s.load_state_dict(st)


def normalised_entropy(model: Any, batch: Batch) -> np.ndarray:
    """Per row ``H(p) / log C`` of the task head's predictive distribution (0 for regression rows)."""
    pooled = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.task_ids)
    scores = np.zeros(len(batch))
    for rows, logits in model.batch_logits(batch, pooled).values():
        if logits.shape[1] < 2:
            continue
        logp = torch.log_softmax(logits.float(), dim=-1)  # (R, C)
        ent = -(logp.exp() * logp).sum(-1) / np.log(logits.shape[1])  # (R,)
        scores[rows.cpu().numpy()] = ent.cpu().numpy()
    return scores
