"""Training and evaluation data: sources, adapters and the canonical example views.

Every stage asks for one *kind* of example with :func:`load_examples`:

========== ============================ =========================================
kind       example type                 used by
========== ============================ =========================================
sft        SFTExample (prompt, reply)   supervised fine-tuning
ranking    RankingExample (best first)  pairwise reward model
absolute   AbsoluteExample (score 0-1)  absolute reward model
prompts    PromptExample (id)           RL rollouts, evaluation
========== ============================ =========================================

``data.source`` is ``embedded:crs-demo``, a local file (.jsonl, .json, .csv, .parquet)
or ``hub:<dataset id>``; ``data.adapter`` says how its rows become examples.

Canonical rows (adapter ``canonical``, the default for files); a prompt is either
``prompt`` (text) or ``messages`` (a chat ending on a user turn):

* sft: ``{prompt | messages, reply}``
* ranking: ``{prompt | messages, replies: [best, ..., worst], scores?}`` or
  ``{prompt | messages, chosen, rejected}``
* absolute: ``{prompt | messages, reply, score}`` with score in [0, 1]
* prompts: ``{prompt | messages, id?}`` (without an id, a hash of the prompt)

Built-in adapters for other layouts: ``instruction`` (Alpaca), ``oasst1``,
``hh_rlhf``, ``shp``, ``ultrafeedback`` and ``crs_demo``; their docstrings in
:mod:`crs.data.adapters`, :mod:`crs.data.public` and :mod:`crs.demo.dataset` say how each view
is built. :mod:`crs.data.registry` names them all.
"""

from crs.data.adapters import KINDS, Adapter, Drops
from crs.data.loader import (
    convert_table,
    load_examples,
    resolve_adapter,
    sample_examples,
    split_by_prompt,
)
from crs.data.registry import ADAPTERS, EMBEDDED_DEMO
from crs.data.schema import (
    AbsoluteExample,
    DataError,
    Messages,
    PromptExample,
    RankingExample,
    SFTExample,
    user_prompt,
)
from crs.data.sources import Table, apply_columns, read_rows

__all__ = [
    "ADAPTERS",
    "EMBEDDED_DEMO",
    "KINDS",
    "AbsoluteExample",
    "Adapter",
    "DataError",
    "Drops",
    "Messages",
    "PromptExample",
    "RankingExample",
    "SFTExample",
    "Table",
    "apply_columns",
    "convert_table",
    "load_examples",
    "read_rows",
    "resolve_adapter",
    "sample_examples",
    "split_by_prompt",
    "user_prompt",
]
