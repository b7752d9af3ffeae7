"""crs: Combined Reward Signals RLHF.

A config-driven pipeline: SFT -> reward models (pairwise and absolute) -> PPO on a
weighted combination of reward models -> evaluation. The stage scripts at the top of
the repository are thin; everything they share lives in this package.
"""

__version__ = "0.4.0"  # the one version string: pyproject.toml reads it
