"""The ``serve`` section: the combined reward answered over HTTP (``crs serve-reward``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from crs.config.fields import Rule, at_least, within


def _not_empty_texts(value: list[str] | None, config: object) -> bool:
    return value is None or (len(value) > 0 and all(value))


@dataclass
class ServeConfig:
    """`crs serve-reward --config_subset NAME` loads that subset's `rl.rewards` and combination (`rl.combine`,
    `rl.reward_clip`, `rl.missing_eos_penalty`) once and answers OpenRLHF's remote reward-model requests with them
    (docs/past_one_machine.md)."""

    host: str = field(
        default="127.0.0.1",
        metadata={
            "help": "The address the server listens on: `127.0.0.1` answers this machine alone; `0.0.0.0` every "
            "network it is on (the server has no authentication: only on a network you trust)."
        },
    )
    port: int = field(
        default=5000,
        metadata={
            "help": "The port (OpenRLHF's own reward server uses 5000); 0: any free port, logged at start.",
            "rule": Rule(within(0, 65535), "an integer in [0, 65535]"),
        },
    )
    batch_size: int = field(
        default=32,
        metadata={
            "help": "Replies each reward source scores at once; a request is scored in batches of this many.",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    max_items: int = field(
        default=16384,
        metadata={
            "help": "The most (prompt, reply) pairs one request may hold; more is refused (HTTP 413).",
            "rule": Rule(at_least(1), "an integer >= 1"),
        },
    )
    max_request_mb: float = field(
        default=64.0,
        metadata={
            "help": "The largest request body accepted, in MiB; larger is refused (HTTP 413) before it is read whole.",
            "rule": Rule(within(0.001, 4096), "a number of MiB in [0.001, 4096]"),
        },
    )
    eos_texts: list[str] | None = field(
        default=None,
        metadata={
            "help": "The texts a reply that ended with its end-of-sequence token ends with, once decoded with special "
            "tokens (as OpenRLHF decodes): stripped from the reply, and the missing-EOS penalty applies to replies "
            "without one. null: the `eos_token` of `model.name`'s tokenizer (the policy's base).",
            "rule": Rule(_not_empty_texts, "null, or a non-empty list of non-empty texts"),
        },
    )
    reward_state: str | None = field(
        default=None,
        metadata={
            "help": "Where the z-scale of sources without saved statistics (`length`, `gold`, `python:`) comes from: "
            "an RL run (the statistics its last checkpoint froze, as `crs score`'s `reward of <run>` uses them) or a "
            "reward-state JSON file (`crs_reward_state.json`, a PPO checkpoint's `trainer_state.json`). Overrides "
            "the saved statistics of the sources it names. null: none."
        },
    )
    fit_stats_on_first_request: bool = field(
        default=False,
        metadata={
            "help": "A `zscore` source with no statistics at all: true fits them on the first request's replies and "
            "freezes them (crs's PPO does so on its first batch; the scale then depends on that request); false: "
            "the server refuses to start and says which source lacks them."
        },
    )


__all__ = ["ServeConfig"]
