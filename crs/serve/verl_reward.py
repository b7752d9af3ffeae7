"""crs's combined reward as verl's custom reward function, in this process or through ``crs serve-reward``.

verl (``verl/trainer/ppo/reward.py``, ``get_custom_reward_fn``) loads the function ``custom_reward_function.name``
from the file ``custom_reward_function.path`` and calls it with the keywords of its reward managers
(``verl/workers/reward_manager/``): one reply at a time (the default, ``naive``)::

    compute_score(data_source, solution_str, ground_truth, extra_info=None, **reward_kwargs) -> float

or a whole batch (``reward_model.reward_manager=batch``; far faster here: the reward models score in batches)::

    compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos, **reward_kwargs) -> list[float]

``solution_str`` is the reply decoded without special tokens, and verl passes no prompt: crs reads it from the
row's ``extra_info`` (``prompt``: a text or a list of chat messages; else ``question``, the key verl's example
preprocessors write), and refuses a row without one (a reward model scores a reply *to* a prompt). With the EOS
token gone from the text, whether a reply stopped is unknown: the missing-EOS penalty does not apply here.

Where the reward comes from, by keyword (``custom_reward_function.reward_kwargs``) or environment variable:

* ``crs_url`` / ``CRS_REWARD_URL``: a running ``crs serve-reward`` (``http://HOST:PORT/get_reward``);
* else ``crs_config_subset`` / ``CRS_REWARD_SUBSET`` (and ``crs_config`` / ``CRS_REWARD_CONFIG``, the YAML file;
  default ``config.yaml``): that subset's reward, loaded once per process on its accelerator.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from crs.config import ConfigError, load_config
from crs.data.adapters import BadRow, messages_value, prompt_text_value
from crs.data.markup import MarkupError, detect_markup, render_chatml
from crs.data.schema import DataError, Messages
from crs.runs import RunError
from crs.serve.served_reward import ScoringItems, ServedReward

URL_VARIABLE = "CRS_REWARD_URL"
SUBSET_VARIABLE = "CRS_REWARD_SUBSET"
CONFIG_VARIABLE = "CRS_REWARD_CONFIG"
PROMPT_KEYS = ("prompt", "question")  # where in extra_info the prompt is looked for, in this order
TIMEOUT_S = 600


def compute_score(
    data_source: Any, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None, **kwargs: Any
) -> float:
    """verl's per-reply reward function: the combined reward of ``solution_str`` to ``extra_info``'s prompt."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **kwargs)[0]


def compute_score_batch(
    data_sources: Sequence[Any],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None],
    **kwargs: Any,
) -> list[float]:
    """verl's batch reward function: one combined reward per reply (``data_sources`` and ``ground_truths`` unused)."""
    prompts = [row_prompt(info, index) for index, info in enumerate(extra_infos)]
    replies = [str(reply) for reply in solution_strs]
    url = kwargs.get("crs_url") or os.environ.get(URL_VARIABLE)
    if url:
        return post_rewards(str(url), prompts, replies)
    subset = kwargs.get("crs_config_subset") or os.environ.get(SUBSET_VARIABLE)
    if not subset:
        raise ConfigError(
            f"crs's verl reward needs {URL_VARIABLE} (a crs serve-reward URL) or {SUBSET_VARIABLE} (the config subset "
            "whose reward to load here), as environment variables or custom_reward_function.reward_kwargs "
            "crs_url / crs_config_subset"
        )
    config = kwargs.get("crs_config") or os.environ.get(CONFIG_VARIABLE)
    served = local_reward(str(subset), str(config) if config else None)
    return served(ScoringItems(prompts, replies, None)).combined.tolist()


def row_prompt(extra_info: Mapping[str, Any] | None, index: int = 0) -> Messages:
    """The prompt of a verl row, from its ``extra_info`` (:data:`PROMPT_KEYS`), as chat messages."""
    found = next((extra_info[key] for key in PROMPT_KEYS if extra_info and extra_info.get(key) is not None), None)
    if found is None or (isinstance(found, str) and not found.strip()):
        raise DataError(
            f"verl row {index}: no prompt in extra_info (keys {', '.join(PROMPT_KEYS)}); crs's reward scores a reply "
            "to a prompt: write it into each row's extra_info when preparing the data, e.g. extra_info={'prompt': ...}"
        )
    value = found.tolist() if hasattr(found, "tolist") else found  # a list read back from parquet is an array
    try:
        return prompt_text_value(value, "prompt") if isinstance(value, str) else messages_value(list(value))
    except (BadRow, TypeError) as err:
        raise DataError(f"verl row {index}: extra_info prompt: {err}") from None


@lru_cache(maxsize=4)
def local_reward(subset: str, config_path: str | None) -> ServedReward:
    """The reward of ``subset`` in ``config_path`` (default config.yaml), loaded once per process."""
    return ServedReward.from_config(load_config(subset, config_path))


def post_rewards(url: str, prompts: list[Messages], replies: list[str]) -> list[float]:
    """The rewards of ``replies`` from a ``crs serve-reward`` at ``url``, in OpenRLHF's protocol; every reply counts
    as ended (``ended_with_eos``), as in this process."""
    texts = [prompt_text(messages) for messages in prompts]
    body = {"query": [p + r for p, r in zip(texts, replies)], "prompts": texts, "ended_with_eos": [True] * len(texts)}
    request = urllib.request.Request(
        url, data=json.dumps(body).encode("utf-8"), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            return [float(r) for r in json.loads(answer.read())["rewards"]]
    except urllib.error.HTTPError as err:
        said = err.read().decode("utf-8", "replace")
        raise RunError(f"crs reward server {url} answered {err.code}: {said[:500]}") from None
    except urllib.error.URLError as err:
        raise RunError(
            f"crs reward server {url} cannot be reached ({err.reason}); is crs serve-reward running?"
        ) from None


def prompt_text(messages: Messages) -> str:
    """A prompt as the server reads it back into the same turns: one user turn as its text (unless that text would
    read as a chat markup), else ChatML."""
    if len(messages) == 1 and messages[0]["role"] == "user" and detect_markup(messages[0]["content"]) is None:
        return messages[0]["content"]
    try:
        return render_chatml(messages)
    except MarkupError as err:
        raise DataError(f"a prompt crs cannot send to its reward server: {err}") from None


__all__ = ["compute_score", "compute_score_batch", "local_reward", "post_rewards", "row_prompt"]
