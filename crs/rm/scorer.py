"""Trained reward models at inference: load them, tokenize as in training, score.

:func:`load_reward_scorers` loads several RMs, sharing one base model among LoRA RMs
trained on it; each :class:`RewardScorer` tokenizes through its run's
:class:`~crs.rm.rm_format.RMFormat`, as training did. A joint RM (``rm.loss: joint``, two
heads) scores with :class:`~crs.rm.joint_heads.JointHeads`: a weighted sum of its two z-scored heads.
A disentangled RM (``rm.loss: disentangled``) saved its quality head alone: it scores like a pairwise one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from crs.config import DataConfig, ModelConfig
from crs.data.schema import Messages
from crs.models.loading import load_sequence_classifier, load_tokenizer
from crs.models.manifest import check_run_kind, read_run_manifest
from crs.models.precision import autocast, resolve_dtype
from crs.models.resolution import base_location
from crs.processes import place_on_device, process_device
from crs.rm.joint_heads import JointHeads
from crs.rm.rm_format import RMFormat, read_joint_heads, read_rm_files


class RewardScorer:
    """Scores (prompt, reply) pairs with one reward model; the same path as training.

    ``score(prompts, replies)`` returns the raw head output (one float per reply, on CPU).
    For an absolute RM, ``sigmoid(reward)`` is its predicted quality in [0, 1]. A joint RM
    (``joint`` set) returns its heads combined (:meth:`JointHeads.combine`);
    :meth:`score_heads` gives every output raw. ``stats`` holds the run's
    ``reward_stats.json`` (None for a model that is not a crs RM run; its ``mean`` / ``std``
    are those of what ``score`` returns) and ``loss_kind`` its ``rm.loss`` (``pairwise`` /
    ``absolute`` / ``joint`` / ``disentangled`` / None). Several scorers may share one PeftModel;
    ``adapter_name`` then selects theirs.
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
        joint: JointHeads | None = None,
    ) -> None:
        self.model, self.tokenizer, self.fmt = model, tokenizer, fmt
        self.name, self.loss_kind, self.stats, self.joint = name, loss_kind, stats, joint
        self.adapter_name, self.batch_size = adapter_name, batch_size
        self.dtype = dtype or next(model.parameters()).dtype

    @classmethod
    def from_path(
        cls, path: str, model_cfg: ModelConfig | None = None, batch_size: int = 16, device: str | None = None
    ) -> RewardScorer:
        """Load one reward model (a crs RM run dir or any sequence-classifier path)."""
        return load_reward_scorers([path], model_cfg, batch_size, device)[0]

    def encode(self, prompts: list[Messages], replies: list[str]) -> dict[str, Tensor]:
        """The padded token batch this scorer feeds its model (see :meth:`RMFormat.encode`)."""
        return self.fmt.encode(self.tokenizer, prompts, replies)

    def score(self, prompts: list[Messages], replies: list[str]) -> Tensor:
        """Rewards of ``replies[i]`` to ``prompts[i]``, in batches of ``batch_size``.

        Output 0, or a joint RM's combined heads.
        """
        heads = self.score_heads(prompts, replies)
        return self.joint.combine(heads) if self.joint is not None else heads[:, 0]

    @torch.no_grad()
    def score_heads(self, prompts: list[Messages], replies: list[str]) -> Tensor:
        """Every raw output of the model, ``[N, num_labels]`` (on CPU), in batches of ``batch_size``."""
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
                rewards.append(self.model(**batch).logits.float().cpu())
        self.model.train(was_training)
        return (
            torch.cat(rewards)
            if rewards
            else torch.zeros(0, getattr(getattr(self.model, "config", None), "num_labels", 1))
        )

    __call__ = score


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
    plain model paths load as separate models; a joint RM (two outputs) shares a base only
    with other joint RMs on it, and scores with its combined heads
    (:func:`~crs.rm.rm_format.read_joint_heads`). ``model_cfg`` gives dtype/quantization;
    ``default_format`` is used for paths without an ``rm_format.json`` (else data defaults).
    """
    device = device or process_device()  # cuda:LOCAL_RANK under torchrun, not every process on cuda:0
    cache_dir = model_cfg.cache_dir if model_cfg else None
    dtype = resolve_dtype(model_cfg.dtype) if model_cfg else torch.float32
    shared: dict[tuple[str, int], Any] = {}  # (base, outputs) -> PeftModel carrying every adapter on that base
    scorers = []
    for index, path in enumerate(paths):
        check_run_kind(path, "reward_model")  # an SFT/RL run would score with an untrained head
        manifest = read_run_manifest(path) if Path(path).is_dir() else None
        fmt, stats, loss_kind = read_rm_files(path)
        joint = None
        if loss_kind == "joint":
            joint, stats = read_joint_heads(path, stats)
        tokenizer = load_tokenizer(path, cache_dir, padding_side="right")
        adapter_name = None
        if manifest is not None and not manifest.get("full_model"):
            # Runs on one base share it, if their heads have the same number of outputs (a joint RM's two).
            key = (base_location(path, manifest["base"]), manifest.get("num_labels", 1))
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
                joint=joint,
            )
        )
    return scorers
