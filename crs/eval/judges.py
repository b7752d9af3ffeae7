"""External judges: verdicts another tool gave on crs's predictions, read and mapped onto them.

``eval_rewarding.judge`` may name a file, or a glob of files, of pairwise verdicts instead of
``gold`` / ``none`` (examples in docs/evaluation.md):

* AlpacaEval annotations (``.json``): a list of ``{instruction, output_1, generator_1,
  output_2, generator_2, preference}`` as ``alpaca_eval`` writes them (``annotations.json``).
  ``preference`` is 1 (output_1 is better), 2 (output_2 is better), 1.5 (a tie; 0 is read
  as a tie too, as AlpacaEval does), anything in between from a weighted judge, or null
  when the judge failed.
* A verdict CSV (``.csv``): ``prompt_id, model_a, model_b, preference`` with the same
  preference scale (1: model_a better, 2: model_b better, 1.5: tie, empty or ``null``: the
  judge failed), and an optional ``run`` column when prompts were sampled several times.

A verdict is mapped to a crs model pair by generator name (the ``generator`` its prediction
rows carry, which may hold a ``/`` as AlpacaEval's ``org/model`` names do; the prediction
file's name where no model's rows carry that name) and to a prompt by ``prompt_id``
where the row has one, else by its instruction text; several sampling runs of one prompt
are told apart by the outputs. A preference outside [1, 2], or two verdicts on the same
pair and prompt, stops the run naming the file and row (:class:`DataError`); annotations
of models or prompts the predictions do not have are counted and reported, never silently
dropped, and so are null verdicts.
"""

from __future__ import annotations

import glob
import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crs.config import ConfigError
from crs.data.schema import DataError
from crs.data.sources import csv_rows
from crs.eval.ranking import PairwiseVerdicts

logger = logging.getLogger(__name__)

BUILT_IN = ("auto", "gold", "none")
_NULL_TEXT = {"", "null", "none", "nan", "na", "n/a"}


def is_external(spec: str) -> bool:
    """Whether ``eval_rewarding.judge`` names verdict files rather than a built-in judge."""
    return spec not in BUILT_IN


@dataclass
class ExternalJudge:
    """A pairwise judge read from files: its name, its verdicts, and what was read."""

    name: str
    verdicts: PairwiseVerdicts
    summary: dict[str, Any] = field(default_factory=dict)


def preference_outcome(value: Any, where: str) -> float | None:
    """An AlpacaEval preference (1 first better, 2 second better, 1.5 or 0 tie, fractions
    between, null: failed) as the outcome of the *first* model: ``2 - preference``."""
    if isinstance(value, str):
        if value.strip().lower() in _NULL_TEXT:
            return None
        try:
            value = float(value)
        except ValueError:
            raise DataError(f"{where}: preference {value!r} is not a number (1, 2, 1.5 for a tie, or empty)") from None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where}: preference {value!r} is not a number (1, 2, 1.5 for a tie, or null)")
    value = float(value)
    if math.isnan(value):
        return None
    if value == 0.0:  # AlpacaEval's old encoding of a draw
        value = 1.5
    if not 1.0 <= value <= 2.0:
        raise DataError(
            f"{where}: preference {value:g} is outside [1, 2] (1: the first output is better, 2: the second, "
            "1.5: a tie, null: the judge failed)"
        )
    return 2.0 - value


class _Predictions:
    """Where each prompt text, prompt id and sampling run sits among the aligned predictions."""

    def __init__(self, per_model: Mapping[str, Sequence[Mapping[str, Any]]], item_ids: Sequence[str]) -> None:
        self.per_model, self.item_ids = per_model, list(item_ids)
        self.names = model_names(per_model)
        first = next(iter(per_model.values()))
        self.by_text: dict[str, list[int]] = {}
        self.by_pid: dict[str, list[int]] = {}
        for index, row in enumerate(first):
            self.by_text.setdefault(str(row["instruction"]).strip(), []).append(index)
            self.by_pid.setdefault(str(row["prompt_id"]), []).append(index)

    def _same_output(self, model: str, index: int, text: Any) -> bool:
        return isinstance(text, str) and self.per_model[model][index]["output"].strip() == text.strip()

    def find(self, candidates: list[int], outputs: Mapping[str, Any], where: str, what: str) -> int | None:
        """The one item among ``candidates`` (by its outputs when there are several)."""
        if len(candidates) == 1:
            return candidates[0]
        matching = [i for i in candidates if all(self._same_output(m, i, text) for m, text in outputs.items())]
        if len(matching) == 1:
            return matching[0]
        if not matching:
            return None
        runs = ", ".join(self.item_ids[i] for i in matching)
        raise DataError(
            f"{where}: {what} matches several predictions with the same outputs ({runs}); give the row a "
            "prompt_id (and a run) to say which"
        )


@dataclass
class _Collector:
    """Verdicts as they are read, with duplicates refused and everything else counted."""

    models: Sequence[str]
    by_pair: dict[tuple[str, str], dict[str, float | None]] = field(default_factory=dict)
    seen: dict[tuple[str, str, str], str] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    n_rows: int = 0
    n_used: int = 0
    n_failed: int = 0

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def add(self, first: str, second: str, item: str, outcome: float | None, where: str) -> None:
        position = {m: i for i, m in enumerate(self.models)}
        key = (first, second) if position[first] < position[second] else (second, first)
        if (key[0], key[1], item) in self.seen:
            raise DataError(
                f"{where}: a second verdict on {key[0]} vs {key[1]} for prompt {item} (the first: "
                f"{self.seen[(key[0], key[1], item)]}); keep one verdict per model pair and prompt"
            )
        self.seen[(key[0], key[1], item)] = where
        if outcome is not None and key[0] != first:
            outcome = 1.0 - outcome
        self.by_pair.setdefault(key, {})[item] = outcome
        self.n_used += 1
        self.n_failed += outcome is None


def model_names(per_model: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, str]:
    """The name a verdict may give each model -> that model (its key in ``per_model``, the file's name).

    A model is named by the ``generator`` its prediction rows carry (AlpacaEval names models
    like ``allenai/tulu-2-dpo-13b``, which no file name can hold), and by its file's name where
    no other model's rows carry that name. A generator found in two models' files names neither.
    """
    owners: dict[str, set[str]] = {}
    for model, rows in per_model.items():
        for row in rows:
            if isinstance(row.get("generator"), str) and row["generator"]:
                owners.setdefault(row["generator"], set()).add(model)
    names = {model: model for model in per_model}
    names.update({generator: next(iter(models)) for generator, models in owners.items() if len(models) == 1})
    return names


def _models_known(collector: _Collector, first: Any, second: Any, names: Mapping[str, str]) -> tuple[str, str] | None:
    """The two models a verdict compares (by :func:`model_names`), or None (the row counted as skipped)."""
    given = [str(first), str(second)]
    unknown = sorted({n for n in given if n not in names})
    if unknown:
        collector.skip(f"annotation(s) of a model without predictions ({', '.join(unknown)})")
        return None
    if names[given[0]] == names[given[1]]:
        collector.skip("annotation(s) comparing a model with itself")
        return None
    return names[given[0]], names[given[1]]


def read_annotation_rows(path: Path) -> list[Any]:
    """The rows of one AlpacaEval annotations file (a JSON list); a file that is not one is a :class:`DataError`."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of AlpacaEval annotations, got {type(rows).__name__}")
    return rows


def _read_alpaca_eval(path: Path, predictions: _Predictions, collector: _Collector) -> list[str]:
    """AlpacaEval annotations; returns the annotator names the rows give."""
    rows = read_annotation_rows(path)
    annotators = []
    for number, row in enumerate(rows):
        where = f"{path}, annotation {number}"
        collector.n_rows += 1
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object, got {type(row).__name__}")
        missing = [k for k in ("generator_1", "generator_2", "preference") if k not in row]
        if "instruction" not in row and "prompt_id" not in row:
            missing.append("instruction")
        if missing:
            raise DataError(
                f"{where}: missing key(s) {missing}; an AlpacaEval annotation has instruction, output_1, "
                "generator_1, output_2, generator_2 and preference"
            )
        outcome = preference_outcome(row["preference"], where)
        if isinstance(row.get("annotator"), str):
            annotators.append(row["annotator"])
        models = _models_known(collector, row["generator_1"], row["generator_2"], predictions.names)
        if models is None:
            continue
        first, second = models
        pid = row.get("prompt_id")
        if pid is not None and str(pid) in predictions.by_pid:
            candidates, what = predictions.by_pid[str(pid)], f"prompt_id {pid!r}"
        else:
            candidates = predictions.by_text.get(str(row.get("instruction", "")).strip(), [])
            what = "its instruction"
        if not candidates:
            collector.skip("annotation(s) of a prompt the predictions do not have")
            continue
        index = predictions.find(candidates, {first: row.get("output_1"), second: row.get("output_2")}, where, what)
        if index is None:
            collector.skip("annotation(s) whose outputs match none of the prompt's sampling runs")
            continue
        collector.add(first, second, predictions.item_ids[index], outcome, where)
    return annotators


def _read_csv(path: Path, predictions: _Predictions, collector: _Collector) -> None:
    """``prompt_id, model_a, model_b, preference[, run]``."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    shape = "a verdict CSV has prompt_id, model_a, model_b, preference (and optionally run)"
    for where, row in csv_rows(path, text, ("prompt_id", "model_a", "model_b", "preference"), shape):
        collector.n_rows += 1
        outcome = preference_outcome(row.get("preference") or "", where)
        models = _models_known(collector, row.get("model_a"), row.get("model_b"), predictions.names)
        if models is None:
            continue
        pid = str(row.get("prompt_id") or "")
        candidates = predictions.by_pid.get(pid, [])
        if not candidates:
            collector.skip("annotation(s) of a prompt the predictions do not have")
            continue
        run = row.get("run")
        if run not in (None, ""):
            candidates = [i for i in candidates if predictions.item_ids[i] == f"{pid}#{run}"]
            if not candidates:
                collector.skip("annotation(s) of a sampling run the predictions do not have")
                continue
        elif len(candidates) > 1:
            raise DataError(
                f"{where}: prompt {pid!r} was answered in {len(candidates)} sampling runs; add a run column "
                "to say which one each verdict is about"
            )
        collector.add(*models, predictions.item_ids[candidates[0]], outcome, where)


JUDGE_KINDS = {
    ".json": "AlpacaEval annotations (.json)",
    ".csv": "a verdict CSV (.csv of prompt_id, model_a, model_b, preference)",
}


def judge_files(spec: str, key: str = "eval_rewarding.judge", kinds: Sequence[str] = (".json", ".csv")) -> list[Path]:
    """The files a judge key (``eval_rewarding.judge``, ``bon.judge``) names: one path, or every match of a glob.

    Errors name ``key``; ``kinds`` are the file suffixes that key reads.
    """
    expected = " or ".join(JUDGE_KINDS[kind] for kind in kinds)
    if any(c in spec for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise ConfigError(
                f"{key}: no file matches {spec!r}; point it at {expected} (a relative path starts in the current "
                "directory)"
            )
    else:
        files = [Path(spec)]
        if not files[0].is_file():
            alternatives = "neither gold, none, nor" if key == "eval_rewarding.judge" else "not"
            raise ConfigError(f"{key}: {spec!r} is {alternatives} an existing file of verdicts ({expected})")
    odd = [str(f) for f in files if f.suffix.lower() not in kinds]
    if odd:
        raise ConfigError(f"{key}: {', '.join(odd)}: expected {expected}")
    return files


def load_judge(
    spec: str, per_model: Mapping[str, Sequence[Mapping[str, Any]]], item_ids: Sequence[str], taken: Sequence[str] = ()
) -> ExternalJudge:
    """Read the verdict files ``spec`` names and map them onto the aligned predictions.

    ``per_model[model][i]`` is a prediction row (``instruction``, ``output``, ``prompt_id``)
    for item ``item_ids[i]``; the verdicts are keyed by those item ids. The judge is named
    after the annotator the rows give (AlpacaEval's ``annotator``), else the file; a name in
    ``taken`` (another scorer's) gets `` (judge)`` appended.
    """
    files = judge_files(spec)
    predictions = _Predictions(per_model, item_ids)
    collector = _Collector(list(per_model))
    annotators: list[str] = []
    for path in files:
        if path.suffix.lower() == ".csv":
            _read_csv(path, predictions, collector)
        else:
            annotators += _read_alpaca_eval(path, predictions, collector)
    skipped = dict(sorted(collector.skipped.items()))
    if collector.n_used == 0:
        reasons = "; ".join(f"{n} {r}" for r, n in skipped.items()) or "the files hold no verdicts"
        here = ", ".join(sorted(predictions.names))
        raise ConfigError(
            f"eval_rewarding.judge: none of the {collector.n_rows} verdicts in {spec} is about these "
            f"predictions ({reasons}); models here (file names and generators): {here}"
        )
    for reason, count in skipped.items():
        logger.warning("eval_rewarding.judge: %d %s (not used)", count, reason)
    if collector.n_failed:
        logger.warning(
            "eval_rewarding.judge: the judge failed (null preference) on %d of %d comparisons; they are "
            "counted and left out of every rate",
            collector.n_failed,
            collector.n_used,
        )
    distinct = list(dict.fromkeys(annotators))
    name = distinct[0] if len(distinct) == 1 else files[0].stem if len(files) == 1 else "external judge"
    if name in taken:
        name = f"{name} (judge)"
    summary = {
        "spec": spec,
        "files": [str(f) for f in files],
        "n_rows": collector.n_rows,
        "n_used": collector.n_used,
        "n_failed": collector.n_failed,
        "skipped": skipped,
    }
    return ExternalJudge(name, PairwiseVerdicts(collector.by_pair), summary)
