"""Where the gold judge means something: the demo's own prompts, and the policy for any others.

The gold judge (and the simulated annotator, :mod:`crs.demo.annotator`) grades replies by rules
written for the demo dataset's prompt templates; on other prompts it still returns numbers, which
mean nothing. The core asks here, through :func:`resolve_judge` (a judge named ``auto`` or
``gold``) and :func:`check_gold_applies` (gold as a reward source or as the labeller), before it
uses the gold anywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from functools import lru_cache

from crs.config import ConfigError
from crs.demo.dataset import demo_dataset_path
from crs.io import iter_jsonl

logger = logging.getLogger(__name__)

GOLD_OVERRIDE_KEY = "run.allow_gold_outside_demo"


@lru_cache(maxsize=1)
def demo_prompt_texts() -> frozenset[str]:
    """Every prompt of the embedded demo dataset (all splits), whitespace-normalised."""
    return frozenset(" ".join(row["prompt"].split()) for _, row in iter_jsonl(demo_dataset_path()))


def prompts_outside_demo(prompt_texts: Iterable[str]) -> list[str]:
    """The prompts (user texts) that are not the demo dataset's: the gold judge's rules were written for those alone."""
    known = demo_prompt_texts()
    return [t for t in prompt_texts if " ".join(t.split()) not in known]


JUDGE_REMEDY = "Name another judge (a reward-model run, python:module:function, or an external judge's verdicts)"


def check_gold_applies(prompt_texts: Sequence[str], key: str, allow: bool, remedy: str = JUDGE_REMEDY) -> None:
    """Refuse the gold judge (or the simulated annotator) named by ``key`` on prompts that are not the demo's.

    Its rules parse the demo's prompt templates; on other prompts it still returns numbers,
    which mean nothing. ``allow`` (``run.allow_gold_outside_demo``) lets it run anyway, with a warning.
    """
    outside = prompts_outside_demo(prompt_texts)
    if not outside:
        return
    what = f"{len(outside)} of {len(prompt_texts)} prompts are not the demo dataset's (e.g. {outside[0][:60]!r})"
    if not allow:
        raise ConfigError(
            f"{key}: gold is the demo annotator's rule set, and {what}: its scores there mean nothing. {remedy}, "
            f"or set {GOLD_OVERRIDE_KEY}: true to use it knowingly"
        )
    logger.warning("%s: gold on prompts it was not built for (%s), as %s asks", key, what, GOLD_OVERRIDE_KEY)


def resolve_judge(spec: str, prompt_texts: Sequence[str], key: str, allow: bool, instead: str = "no judge") -> str:
    """``auto`` -> ``gold`` when every prompt is the demo's, else ``none``, said in one line ending in ``instead``
    (what takes the judge's place); an explicit ``gold`` is checked by :func:`check_gold_applies`."""
    if spec == "auto":
        outside = prompts_outside_demo(prompt_texts)
        if not outside:
            return "gold"
        logger.warning(
            "%s auto -> none: %d of %d prompts are not the demo dataset's, which the gold judge alone can judge; %s",
            key,
            len(outside),
            len(prompt_texts),
            instead,
        )
        return "none"
    if spec == "gold":
        check_gold_applies(prompt_texts, key, allow)
    return spec
