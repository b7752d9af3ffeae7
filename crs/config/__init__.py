"""The configuration: typed sections, YAML subsets, CLI overrides, validation.

``config.yaml`` holds a ``default`` block and named subsets (``sft``, ``rm_preference``,
``rl_crs``, ...). A subset is deep-merged over ``default``, then ``--set key.sub=value``
overrides are applied, then the result is checked against the section dataclasses, which
are the single list of every key, its type and its default (as Hugging Face splits a
*Config* from the *Trainer* that consumes it), and its values against their rules.
Each field's help text is its ``metadata["help"]``, as in TRL's config dataclasses, and
its rule, where it has one, is its ``metadata["rule"]``;
``scripts/render_config_docs.py`` renders the sections, their fields and that help into
``docs/config.md``.

The modules, one concept each:

* :mod:`~crs.config.errors`: :class:`ConfigError`; the stage scripts print one as one line
  and exit with code 2.
* :mod:`~crs.config.fields`: :class:`~crs.config.fields.Rule` and the predicates a rule
  is made of.
* one module per section: :mod:`~crs.config.run`, :mod:`~crs.config.model`,
  :mod:`~crs.config.data`, :mod:`~crs.config.train`, :mod:`~crs.config.reward_model`,
  :mod:`~crs.config.rl`, :mod:`~crs.config.eval` (``eval_pred``, ``eval_rewarding``),
  :mod:`~crs.config.study` (``sweep``, ``online``), :mod:`~crs.config.bon` (``bon``),
  :mod:`~crs.config.serve` (``serve``);
  :mod:`~crs.config.root` puts them together in :class:`CRSConfig`; :mod:`~crs.config.length_keys`
  holds the length keys every list of reward sources shares.
* :mod:`~crs.config.reader` (YAML, subsets, overrides), :mod:`~crs.config.coercion`
  (types), :mod:`~crs.config.validation` (every field's rule, over the whole tree).

Everything other modules use is importable from ``crs.config`` itself.
"""

from crs.config.bon import BestOfNConfig
from crs.config.coercion import build_dataclass
from crs.config.data import DataConfig
from crs.config.errors import ConfigError
from crs.config.eval import (
    CombinedScorerConfig,
    EvalModelConfig,
    EvalPredConfig,
    EvalRewardingConfig,
    EvalRewardSourceConfig,
)
from crs.config.model import LoraConfig, ModelConfig
from crs.config.reader import (
    DEFAULT_CONFIG_PATH,
    apply_override,
    check_unique_keys,
    deep_merge,
    load_config,
    parse_override,
    read_yaml,
    save_resolved_config,
)
from crs.config.reward_model import RewardModelConfig
from crs.config.rl import RewardSourceConfig, RLConfig
from crs.config.root import CRSConfig
from crs.config.run import RunConfig
from crs.config.serve import ServeConfig
from crs.config.study import OnlineConfig, SweepArmConfig, SweepConfig
from crs.config.train import TrainConfig
from crs.config.validation import validate_values, value_rules

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "CombinedScorerConfig",
    "ConfigError",
    "CRSConfig",
    "DataConfig",
    "EvalModelConfig",
    "EvalPredConfig",
    "EvalRewardingConfig",
    "EvalRewardSourceConfig",
    "LoraConfig",
    "ModelConfig",
    "OnlineConfig",
    "RewardModelConfig",
    "RewardSourceConfig",
    "RLConfig",
    "RunConfig",
    "ServeConfig",
    "SweepArmConfig",
    "SweepConfig",
    "BestOfNConfig",
    "TrainConfig",
    "apply_override",
    "build_dataclass",
    "check_unique_keys",
    "deep_merge",
    "load_config",
    "parse_override",
    "read_yaml",
    "save_resolved_config",
    "validate_values",
    "value_rules",
]
