"""Trained reward models at inference: load them, tokenize as in training, score.

:class:`RMFormat` is how an RM turns (prompt, reply) into token ids; it is saved with
the run (``rm_format.json``) and used by the training collators and by
:class:`RewardScorer` alike, so a reward model always sees token ids built as in
training. :func:`load_reward_scorers` loads several RMs, sharing one base model among
LoRA RMs trained on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from crs.config import DataConfig, ModelConfig
from crs.data.schema import Messages
from crs.models.formatting import encode_prompt_reply, pad_batch
from crs.models.loading import (
    ModelError,
    autocast,
    base_location,
    check_run_kind,
    load_sequence_classifier,
    load_tokenizer,
    read_run_json,
    read_run_manifest,
    resolve_dtype,
)
from crs.processes import place_on_device, process_device

RM_FORMAT_FILE = "rm_format.json"
REWARD_STATS_FILE = "reward_stats.json"


@dataclass
class RMFormat:
    """How (prompt, reply) pairs become token ids for one reward model.

    Copied from ``data.*`` at training time and saved with the run (``rm_format.json``)
    so that scoring later, under another stage's config, tokenizes exactly as training did.
    """

    max_length: int = 512
    max_prompt_length: int = 256
    fallback_template: str = "{role}: {content}\n"

    @classmethod
    def from_data_config(cls, data: DataConfig) -> RMFormat:
        """The format a reward model trained on ``data`` uses."""
        return cls(data.max_length, data.max_prompt_length, data.fallback_template)

    def encode(self, tokenizer: Any, prompts: list[Messages], replies: list[str]) -> dict[str, Tensor]:
        """A padded batch (``input_ids``, ``attention_mask``) of prompt + reply sequences.

        Padding uses the tokenizer's pad id, which the model's ``pad_token_id`` must equal
        (decoder classifiers read the reward at the last non-pad token).
        """
        encoded = [
            encode_prompt_reply(tokenizer, p, r, self.max_length, self.max_prompt_length, self.fallback_template)
            for p, r in zip(prompts, replies, strict=True)
        ]
        ids, mask = pad_batch([e.input_ids for e in encoded], tokenizer.pad_token_id, side=tokenizer.padding_side)
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}



class RewardScorer:
    """Scores (prompt, reply) pairs with one reward model; the same path as training.

    ``score(prompts, replies)`` returns the raw head output (one float per reply, on CPU).
    For an absolute RM, ``sigmoid(reward)`` is its predicted quality in [0, 1].
    ``stats`` holds the run's ``reward_stats.json`` (None for a model that is not a crs
    RM run) and ``loss_kind`` its ``rm.loss`` (``pairwise`` / ``absolute`` / None).
    Several scorers may share one PeftModel; ``adapter_name`` then selects theirs.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        fmt: RMFormat,
        *,
        name: str = "reward",
        loss_kind: str | None = None,
        stats: dict[str, Any] | None = None,
        adapter_name: str | None = None,
        batch_size: int = 16,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.model, self.tokenizer, self.fmt = model, tokenizer, fmt
        self.name, self.loss_kind, self.stats = name, loss_kind, stats
        self.adapter_name, self.batch_size = adapter_name, batch_size
        self.dtype = dtype or next(model.parameters()).dtype

    @classmethod
    def from_path(cls, path: str, model_cfg: ModelConfig | None = None, batch_size: int = 16, device: str | None = None) -> RewardScorer:
        """Load one reward model (a crs RM run dir or any sequence-classifier path)."""
        return load_reward_scorers([path], model_cfg, batch_size, device)[0]

    def encode(self, prompts: list[Messages], replies: list[str]) -> dict[str, Tensor]:
        """The padded token batch this scorer feeds its model (see :meth:`RMFormat.encode`)."""
        return self.fmt.encode(self.tokenizer, prompts, replies)

    @torch.no_grad()
    def score(self, prompts: list[Messages], replies: list[str]) -> Tensor:
        """Rewards of ``replies[i]`` to ``prompts[i]``, in batches of ``batch_size``."""
        if len(prompts) != len(replies):
            raise ValueError(f"{len(prompts)} prompts but {len(replies)} replies")
        if self.adapter_name is not None:
            self.model.set_adapter(self.adapter_name, inference_mode=True)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        rewards = []
        for start in range(0, len(prompts), self.batch_size):
            stop = start + self.batch_size
            batch = {k: v.to(device) for k, v in self.encode(prompts[start:stop], replies[start:stop]).items()}
            with autocast(self.dtype, device):
                rewards.append(self.model(**batch).logits[:, 0].float().cpu())
        self.model.train(was_training)
        return torch.cat(rewards) if rewards else torch.zeros(0)

    __call__ = score


_REDO = "the reward-model run is damaged: rerun rm_train.py with --overwrite, or point at another run"


def read_rm_files(path: str | Path) -> tuple[RMFormat | None, dict[str, Any] | None, str | None]:
    """(format, reward stats, loss kind) saved in an RM run dir; None for what is missing."""
    path = Path(path)
    fmt = stats = loss_kind = None
    if (path / RM_FORMAT_FILE).is_file():
        saved = read_run_json(path / RM_FORMAT_FILE, _REDO)
        loss_kind = saved.pop("loss", None)
        try:
            fmt = RMFormat(**saved)
        except TypeError as err:  # a key RMFormat does not have
            raise ModelError(f"{path / RM_FORMAT_FILE} does not describe an RM format ({err}); {_REDO}") from None
    if (path / REWARD_STATS_FILE).is_file():
        stats = read_run_json(path / REWARD_STATS_FILE, _REDO)
    return fmt, stats, loss_kind


def load_reward_scorers(
    paths: list[str],
    model_cfg: ModelConfig | None = None,
    batch_size: int = 16,
    device: str | None = None,
    default_format: RMFormat | None = None,
) -> list[RewardScorer]:
    """Load reward models for scoring; LoRA RMs on one base share a single copy of it.

    The first LoRA RM of a base loads the base and its adapter; each further one is
    attached to the same PeftModel as another named adapter (``load_adapter``), and its
    scorer switches to it (``set_adapter``) before scoring. Fully fine-tuned RMs and
    plain model paths load as separate models. ``model_cfg`` gives dtype/quantization;
    ``default_format`` is used for paths without an ``rm_format.json`` (else data defaults).
    """
    device = device or process_device()  # cuda:LOCAL_RANK under torchrun, not every process on cuda:0
    cache_dir = model_cfg.cache_dir if model_cfg else None
    dtype = resolve_dtype(model_cfg.dtype) if model_cfg else torch.float32
    shared: dict[str, Any] = {}  # base -> PeftModel carrying every adapter on that base
    scorers = []
    for index, path in enumerate(paths):
        check_run_kind(path, "reward_model")  # an SFT/RL run would score with an untrained head
        manifest = read_run_manifest(path) if Path(path).is_dir() else None
        fmt, stats, loss_kind = read_rm_files(path)
        tokenizer = load_tokenizer(path, cache_dir, padding_side="right")
        adapter_name = None
        if manifest is not None and not manifest.get("full_model"):
            key = base_location(path, manifest["base"])  # runs on one base share it
            if key in shared:
                adapter_name = f"reward_{index}"
                shared[key].load_adapter(str(Path(path) / manifest["adapter"]), adapter_name=adapter_name)
            else:  # the base with this run's adapter (peft names it "default")
                shared[key] = place_on_device(load_sequence_classifier(path, model_cfg, merge_adapter=False), device)
                adapter_name = shared[key].active_adapter
            model = shared[key]
        else:
            model = place_on_device(load_sequence_classifier(path, model_cfg), device)
        model.config.pad_token_id = tokenizer.pad_token_id  # the reward is read at the last non-pad token
        model.eval().requires_grad_(False)
        scorers.append(
            RewardScorer(
                model,
                tokenizer,
                fmt or default_format or RMFormat.from_data_config(DataConfig()),
                name=Path(path).name,
                loss_kind=loss_kind,
                stats=stats,
                adapter_name=adapter_name,
                batch_size=batch_size,
                dtype=dtype,
            )
        )
    return scorers
