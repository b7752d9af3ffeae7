"""OpenRLHF's remote reward-model protocol, as crs reads a request and answers it.

OpenRLHF (``openrlhf/utils/remote_rm_utils.py``, ``remote_rm_fn_ray``) posts one JSON object per batch of rollouts
to the URL its ``--reward.remote_url`` (formerly ``--remote_rm_url``) names::

    {"query": [prompt + reply, ...], "prompts": [prompt, ...], "labels": [label, ...]}

where ``query[i]`` is the i-th rollout's tokens decoded with their special tokens and without padding, and
``prompts[i]`` the prompt text it was generated from. It reads ``rewards`` from the answer (newer versions also
``scores``, for dynamic filtering, and ``extra_logs``, logged per key), as its own ``openrlhf/cli/serve_rm.py``
answers::

    {"rewards": [r, ...], "scores": [r, ...], "extra_logs": {"<name>": [value per item], ...}}

crs scores (prompt, reply) pairs, so :func:`parse_reward_request` reads each item as:

* the reply: ``query[i]`` after ``prompts[i]``, which must begin it (else the request is refused, 400, naming the
  item and where the two part);
* whether it ended with EOS: the reply ends with one of the EOS texts (``serve.eos_texts``), which are stripped;
  crs's own optional field ``ended_with_eos`` (one boolean per item) says so instead, for clients that decode
  without special tokens (:mod:`crs.serve.verl_reward`);
* the prompt as chat messages: a prompt in ChatML, Llama-2 or Human/Assistant markup is read back into its turns
  (:func:`crs.data.adapters.prompt_text_value`), any other text is one user turn.

``labels`` are accepted and not used (crs's reward reads no reference answer); unknown keys are ignored. A request
that breaks these rules is a :class:`RequestError` with its HTTP status and a message saying what to change.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from crs.data.adapters import BadRow, prompt_text_value
from crs.rl.combined_reward import RewardBreakdown
from crs.serve.served_reward import ScoringItems


class RequestError(Exception):
    """A request crs does not score: ``status`` is the HTTP status of the answer, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_reward_request(body: Any, eos_texts: Sequence[str], max_items: int) -> ScoringItems:
    """The (prompt, reply, ended) items of an OpenRLHF reward request (module docstring), or a :class:`RequestError`."""
    if not isinstance(body, dict):
        raise RequestError(400, f"the body must be a JSON object {{query, prompts, labels}}, got {_json_type(body)}")
    queries = _texts(body, "query")
    if len(queries) > max_items:
        raise RequestError(
            413, f"{len(queries)} items in one request; at most {max_items} (serve.max_items): send them in parts"
        )
    if body.get("prompts") is None:
        raise RequestError(
            400,
            "prompts is missing: crs scores (prompt, reply) pairs and reads each reply as query[i] after prompts[i]; "
            "send the prompt texts in prompts (OpenRLHF does)",
        )
    prompts = _texts(body, "prompts", len(queries))
    _optional_list(body, "labels", len(queries))
    ended = _optional_list(body, "ended_with_eos", len(queries))
    if ended is not None and not all(isinstance(flag, bool) for flag in ended):
        raise RequestError(400, "ended_with_eos must hold one true or false per item")
    items = [read_item(i, query, prompt, eos_texts) for i, (query, prompt) in enumerate(zip(queries, prompts))]
    return ScoringItems(
        prompts=[messages for messages, _, _ in items],
        replies=[reply for _, reply, _ in items],
        ended_with_eos=ended if ended is not None else [stopped for _, _, stopped in items],
    )


def read_item(index: int, query: str, prompt: str, eos_texts: Sequence[str]) -> tuple[list[dict[str, str]], str, bool]:
    """Item ``index``: its prompt as messages, its reply (EOS texts stripped) and whether one was there."""
    if not prompt.strip():
        raise RequestError(400, f"prompts[{index}] is empty: crs scores a reply to a prompt")
    if not query.startswith(prompt):
        agree = len(os.path.commonprefix([query, prompt]))
        query_then, prompt_then = query[agree : agree + 40], prompt[agree : agree + 40]
        raise RequestError(
            400,
            f"query[{index}] does not begin with prompts[{index}] (the reply is what follows it): they agree on "
            f"{agree} characters, then query has {query_then!r} and the prompt {prompt_then!r}",
        )
    reply, ended = strip_eos(query[len(prompt) :], eos_texts)
    try:
        messages = prompt_text_value(prompt, f"prompts[{index}]")
    except BadRow as err:
        raise RequestError(400, str(err)) from None
    return messages, reply, ended


def strip_eos(reply: str, eos_texts: Sequence[str]) -> tuple[str, bool]:
    """``reply`` without the EOS texts it ends with (repeated ones too: padding by the EOS token), and whether it
    ended with one."""
    ended = False
    while text := next((t for t in eos_texts if t and reply.endswith(t)), None):
        reply, ended = reply[: -len(text)], True
    return reply, ended


def reward_response(scores: RewardBreakdown) -> dict[str, Any]:
    """The answer OpenRLHF reads: ``rewards`` (the combined reward), ``scores`` (the same, for its filtering) and, in
    ``extra_logs``, each source as it entered the combination and whether each reply ended with EOS."""
    rewards = scores.combined.tolist()
    logs = {f"crs/{name}": values.tolist() for name, values in scores.normalized.items()}
    logs["crs/ended_with_eos"] = scores.ended_with_eos.to(torch.float32).tolist()
    return {"rewards": rewards, "scores": rewards, "extra_logs": logs}


def _texts(body: dict[str, Any], key: str, length: int | None = None) -> list[str]:
    values = body.get(key)
    if values is None:
        raise RequestError(400, f"{key} is missing: the request needs {{query: [prompt + reply, ...], prompts: [...]}}")
    if not isinstance(values, list):
        raise RequestError(400, f"{key} must be a list of texts, got {_json_type(values)}")
    wrong = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
    if wrong is not None:
        raise RequestError(400, f"{key}[{wrong}] is {_json_type(values[wrong])}; {key} must be a list of texts")
    if length is not None and len(values) != length:
        raise RequestError(400, f"{key} has {len(values)} items and query {length}: one per item")
    return values


def _optional_list(body: dict[str, Any], key: str, length: int) -> list[Any] | None:
    values = body.get(key)
    if values is None:
        return None
    if not isinstance(values, list):
        raise RequestError(400, f"{key}, when given, must be a list (one entry per item), got {_json_type(values)}")
    if len(values) != length:
        raise RequestError(400, f"{key} has {len(values)} items and query {length}: one per item")
    return values


def _json_type(value: Any) -> str:
    """The JSON kind of ``value``, as an error names it."""
    if isinstance(value, bool):
        return "a boolean"
    kinds = {dict: "an object", list: "a list", str: "a text", int: "a number", float: "a number"}
    return kinds.get(type(value), "null" if value is None else type(value).__name__)


__all__ = ["RequestError", "parse_reward_request", "read_item", "reward_response", "strip_eos"]
