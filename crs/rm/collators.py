"""Reward-model batches: collators that tokenize rankings (with reply lengths, for a disentangled RM),
absolute rows or both through
:meth:`~crs.rm.rm_format.RMFormat.encode` (as scoring does), and the dataset and padded cost the Trainer batches by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from crs.data.schema import AbsoluteExample, RankingExample
from crs.rm.length_metrics import reply_lengths
from crs.rm.rm_format import RMFormat


@dataclass
class RankingCollator:
    """Ranking examples -> one flat batch of all their replies, plus ``group_sizes`` and ``scores``."""

    tokenizer: Any
    fmt: RMFormat

    def __call__(self, examples: list[RankingExample]) -> dict[str, Tensor]:
        prompts = [ex.prompt for ex in examples for _ in ex.replies]
        replies = [reply for ex in examples for reply in ex.replies]
        batch = self.fmt.encode(self.tokenizer, prompts, replies)
        batch["group_sizes"] = torch.tensor([len(ex.replies) for ex in examples])
        batch["scores"] = flat_scores(examples)
        return batch


@dataclass
class DisentangledCollator(RankingCollator):
    """A ranking batch plus ``lengths``, each reply's length, which a disentangled RM's heads are correlated with."""

    def __call__(self, examples: list[RankingExample]) -> dict[str, Tensor]:
        batch = super().__call__(examples)
        batch["lengths"] = torch.from_numpy(reply_lengths([reply for ex in examples for reply in ex.replies])).float()
        return batch


def flat_scores(examples: list[RankingExample]) -> Tensor:
    """The scores of every reply of ``examples``, flattened.

    NaN marks replies without one (no margin, no tie for them).
    """
    return torch.tensor(
        [s for ex in examples for s in (ex.scores if ex.scores is not None else [float("nan")] * len(ex.replies))],
        dtype=torch.float32,
    )


@dataclass
class AbsoluteCollator:
    """(absolute example, loss weight) rows -> a batch with ``targets`` and ``weights``."""

    tokenizer: Any
    fmt: RMFormat

    def __call__(self, rows: list[tuple[AbsoluteExample, float]]) -> dict[str, Tensor]:
        batch = self.fmt.encode(self.tokenizer, [ex.prompt for ex, _ in rows], [ex.reply for ex, _ in rows])
        batch["targets"] = torch.tensor([ex.score for ex, _ in rows], dtype=torch.float32)
        batch["weights"] = torch.tensor([w for _, w in rows], dtype=torch.float32)
        return batch


@dataclass
class JointCollator:
    """Ranking examples and (absolute example, weight) rows, mixed -> one batch.

    The rankings' replies come first (``n_ranking`` sequences, with ``group_sizes`` and
    ``scores``), then the absolute rows (``targets``, ``weights``); one padding for all, so
    a joint batch is one forward pass. Either part may be empty.
    """

    tokenizer: Any
    fmt: RMFormat

    def __call__(self, rows: list[RankingExample | tuple[AbsoluteExample, float]]) -> dict[str, Tensor]:
        rankings = [row for row in rows if isinstance(row, RankingExample)]
        absolutes = [row for row in rows if not isinstance(row, RankingExample)]
        prompts = [ex.prompt for ex in rankings for _ in ex.replies] + [ex.prompt for ex, _ in absolutes]
        replies = [reply for ex in rankings for reply in ex.replies] + [ex.reply for ex, _ in absolutes]
        batch = self.fmt.encode(self.tokenizer, prompts, replies)
        batch["group_sizes"] = torch.tensor([len(ex.replies) for ex in rankings], dtype=torch.long)
        batch["scores"] = flat_scores(rankings)
        batch["n_ranking"] = torch.tensor(sum(len(ex.replies) for ex in rankings))
        batch["targets"] = torch.tensor([ex.score for ex, _ in absolutes], dtype=torch.float32)
        batch["weights"] = torch.tensor([w for _, w in absolutes], dtype=torch.float32)
        return batch


COLLATORS: dict[str, type] = {
    "pairwise": RankingCollator,
    "absolute": AbsoluteCollator,
    "joint": JointCollator,
    "disentangled": DisentangledCollator,
}


def padded_cost(row: RankingExample | tuple[AbsoluteExample, float]) -> int:
    """Characters of a training row's longest sequence, which its batch is padded to (``train.group_by_length``)."""
    example = row if isinstance(row, RankingExample) else row[0]
    prompt = sum(len(message["content"]) for message in example.prompt)
    replies = example.replies if isinstance(example, RankingExample) else [example.reply]
    return prompt + max(len(reply) for reply in replies)


class ListDataset(torch.utils.data.Dataset):
    """A list as a map-style dataset (the collators do the tokenizing)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]
