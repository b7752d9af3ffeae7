"""Human rankings: the ballot files of a human study, read and checked before any scoring.

A *ballot* is one person's ranking of the replies of several models to one prompt, best
first; replies given the same rank are tied. Three file forms are read
(``eval_rewarding.human_rankings``; examples in docs/evaluation.md):

* ``.json`` mapping ``{prompt_id: [ballot, ...]}``, each ballot a best-first list of model
  names in which a list of names is a tie: ``["sft", ["base", "rl"]]``. Annotators are
  anonymous and there is one group.
* ``.jsonl`` (or a ``.json`` list) of ballot records, what annotation tools export once
  flattened: ``{"prompt_id", "annotator", "group"?, "ranks": {slot: rank}, "slots": {slot:
  model}}``: the rank (1 = best; equal ranks tie) each response slot got, and which model
  wrote the reply shown in each slot (tools shuffle and hide the models).
* ``.csv`` with one line per reply on a ballot: ``prompt_id, annotator, group?, slot?,
  model, rank`` (without ``slot`` the model names the slot).

Everything is validated when the file is read, before any reply is scored: a ballot that
misses a model, names one twice, gives a slot no rank or a rank no model, or repeats an
annotator's ballot on a prompt stops the run with one line (:class:`DataError`) naming the
file, the line, the prompt and the annotator. The maths (Tideman's ranked pairs, Borda
points, groups) is in :mod:`crs.eval.ranking`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crs.config import ConfigError
from crs.data.schema import DataError
from crs.data.sources import csv_rows
from crs.eval import ranking

logger = logging.getLogger(__name__)

DEFAULT_GROUP = "all"
_MISSING = ("", None)


@dataclass
class _Record:
    """One ballot as read, with where it came from."""

    where: str
    prompt_id: str
    annotator: str
    group: str
    tiers: list[list[str]]


@dataclass
class HumanBallots:
    """Every ballot of a study, checked: ``by_group[group][prompt_id]`` is a list of
    best-first ballots in tiers (``[["a"], ["b", "c"]]``: b and c tied)."""

    source: str
    by_group: dict[str, dict[str, list[list[list[str]]]]]
    models: list[str]  # in the order the file first names them
    annotators: list[str]
    n_ballots: int
    n_with_ties: int

    @property
    def prompt_ids(self) -> list[str]:
        """Every prompt some group ranked."""
        return list(dict.fromkeys(pid for per_prompt in self.by_group.values() for pid in per_prompt))


def _id(value: Any, what: str, where: str) -> str:
    if value in _MISSING or isinstance(value, (bool, dict, list, float)):
        raise DataError(f"{where}: {what} must be a non-empty text or integer id, got {value!r}")
    return str(value).strip()


def _rank(value: Any, where: str) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise DataError(f"{where}: rank {value!r} is not a whole number (1 = best)") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{where}: rank {value!r} must be a whole number >= 1 (1 = best; equal ranks tie)")
    return value


def _tiers_from_ranks(ranks: dict[str, int], slots: dict[str, str], where: str) -> list[list[str]]:
    """Slot ranks and the slot -> model map as best-first tiers of models."""
    unranked = sorted(set(slots) - set(ranks))
    unmapped = sorted(set(ranks) - set(slots))
    if unranked:
        raise DataError(f"{where}: slot(s) {unranked} ({', '.join(slots[s] for s in unranked)}) have no rank")
    if unmapped:
        raise DataError(f"{where}: slot(s) {unmapped} have a rank but no model (add them to the slot -> model map)")
    models = list(slots.values())
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:
        raise DataError(f"{where}: model(s) {twice} fill more than one slot")
    by_rank: dict[int, list[str]] = {}
    for slot, rank in ranks.items():
        by_rank.setdefault(rank, []).append(slots[slot])
    return [sorted(by_rank[rank]) for rank in sorted(by_rank)]


def _mapping_ballots(path: Path, data: dict[str, Any]) -> list[_Record]:
    """``{prompt_id: [best-first ballot, ...]}`` (an inner list is a tie)."""
    records = []
    for pid, ballots in data.items():
        where = f"{path}: prompt {pid!r}"
        if not isinstance(ballots, list) or not ballots:
            raise DataError(f"{where}: expected a non-empty list of ballots, got {ballots!r}")
        for index, ballot in enumerate(ballots):
            try:
                if not isinstance(ballot, list):
                    raise ValueError(f"a ballot is a best-first list of models, got {ballot!r}")
                tiers = ranking.ballot_tiers(ballot)
            except ValueError as err:
                raise DataError(f"{where}, ballot {index + 1}: {err}") from None
            records.append(_Record(f"{where}, ballot {index + 1}", str(pid), f"#{index + 1}", DEFAULT_GROUP, tiers))
    return records


def _record_ballot(row: Any, where: str) -> _Record:
    """One exported ballot record: prompt_id, annotator, group?, ranks {slot: rank}, slots {slot: model}."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a ballot object, got {type(row).__name__}")
    missing = [key for key in ("prompt_id", "annotator", "ranks", "slots") if key not in row]
    if missing:
        raise DataError(
            f"{where}: missing key(s) {missing}; a ballot needs prompt_id, annotator, ranks {{slot: rank}} "
            "and slots {slot: model} (group optional)"
        )
    pid = _id(row["prompt_id"], "prompt_id", where)
    annotator = _id(row["annotator"], "annotator", where)
    where = f"{where} (prompt {pid!r}, annotator {annotator!r})"
    group = DEFAULT_GROUP if row.get("group") in _MISSING else _id(row["group"], "group", where)
    ranks, slots = row["ranks"], row["slots"]
    if not isinstance(ranks, dict) or not isinstance(slots, dict) or not slots:
        raise DataError(f"{where}: ranks and slots must be objects keyed by response slot")
    if not all(isinstance(m, str) and m.strip() for m in slots.values()):
        raise DataError(f"{where}: slots must map each slot to a model name")
    tiers = _tiers_from_ranks(
        {str(s): _rank(r, where) for s, r in ranks.items()}, {str(s): m.strip() for s, m in slots.items()}, where
    )
    return _Record(where, pid, annotator, group, tiers)


def _jsonl_ballots(path: Path, lines: Sequence[str]) -> list[_Record]:
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {number}: not valid JSON ({err.msg})") from None
        records.append(_record_ballot(row, f"{path}, line {number}"))
    return records


def _csv_ballots(path: Path, text: str) -> list[_Record]:
    """One line per reply on a ballot: prompt_id, annotator, group?, slot?, model, rank."""
    shape = "a ballot CSV has one line per reply: prompt_id, annotator, group (optional), slot (optional), model, rank"
    ballots: dict[tuple[str, str], dict[str, Any]] = {}
    for where, row in csv_rows(path, text, ("prompt_id", "annotator", "model", "rank"), shape):
        pid, annotator = _id(row.get("prompt_id"), "prompt_id", where), _id(row.get("annotator"), "annotator", where)
        model = _id(row.get("model"), "model", where)
        slot = model if row.get("slot") in _MISSING else str(row["slot"])
        ballot = ballots.setdefault(
            (pid, annotator), {"where": where, "group": row.get("group") or DEFAULT_GROUP, "ranks": {}, "slots": {}}
        )
        if (row.get("group") or DEFAULT_GROUP) != ballot["group"]:
            raise DataError(
                f"{where} (prompt {pid!r}, annotator {annotator!r}): group {row.get('group')!r}, but "
                f"{ballot['where']} puts this ballot in group {ballot['group']!r}"
            )
        if slot in ballot["slots"]:
            raise DataError(
                f"{where} (prompt {pid!r}, annotator {annotator!r}): slot {slot!r} ranked twice on one ballot"
            )
        ballot["slots"][slot] = model
        ballot["ranks"][slot] = _rank(row.get("rank"), where)
    records = []
    for (pid, annotator), ballot in ballots.items():
        where = f"{ballot['where']} (prompt {pid!r}, annotator {annotator!r})"
        records.append(
            _Record(where, pid, annotator, ballot["group"], _tiers_from_ranks(ballot["ranks"], ballot["slots"], where))
        )
    return records


def read_ballot_records(path: Path) -> list[_Record]:
    """Every ballot of the file, each checked on its own (see the module docstring for the forms)."""
    if not path.is_file():
        raise ConfigError(f"eval_rewarding.human_rankings: no such file {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_ballots(path, text)
    if suffix == ".jsonl":
        return _jsonl_ballots(path, text.splitlines())
    if suffix != ".json":
        raise ConfigError(f"eval_rewarding.human_rankings: {path}: expected a .json, .jsonl or .csv ballot file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, dict):
        return _mapping_ballots(path, data)
    if isinstance(data, list):
        return [_record_ballot(row, f"{path}, ballot {i + 1}") for i, row in enumerate(data)]
    raise DataError(
        f"{path}: expected {{prompt_id: [[model, ...], ...]}} or a list of ballot records, got {type(data).__name__}"
    )


def load_ballots(path: str | Path) -> HumanBallots:
    """Read and check a ballot file: every ballot must rank every model of the study once
    (the models any ballot names), and an annotator ranks a prompt at most once."""
    path = Path(path)
    records = read_ballot_records(path)
    if not records:
        raise DataError(f"{path}: no ballots")
    models = list(dict.fromkeys(name for r in records for tier in r.tiers for name in tier))
    if len(models) < 2:
        raise DataError(f"{path}: the ballots rank only {models}; a ranking needs at least two models")
    seen: dict[tuple[str, str], str] = {}
    for record in records:
        names = [name for tier in record.tiers for name in tier]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise DataError(f"{record.where}: ranks {twice} twice")
        absent = [m for m in models if m not in names]
        if absent:
            raise DataError(
                f"{record.where}: the ballot does not rank {', '.join(absent)} (it ranks {', '.join(names)}); every "
                f"ballot must rank all {len(models)} models of the study: {', '.join(models)}"
            )
        key = (record.prompt_id, record.annotator)
        if key in seen and not record.annotator.startswith("#"):
            raise DataError(f"{record.where}: a second ballot by this annotator on this prompt (first: {seen[key]})")
        seen[key] = record.where
    by_group: dict[str, dict[str, list[list[list[str]]]]] = {}
    for record in records:
        by_group.setdefault(record.group, {}).setdefault(record.prompt_id, []).append(record.tiers)
    return HumanBallots(
        source=str(path),
        by_group=by_group,
        models=models,
        annotators=list(dict.fromkeys(r.annotator for r in records)),
        n_ballots=len(records),
        n_with_ties=sum(1 for r in records if any(len(tier) > 1 for tier in r.tiers)),
    )


def human_rankings(
    ballots: HumanBallots, tie_break: str = "support", candidate_order: Sequence[str] | None = None
) -> dict[str, Any]:
    """Borda points per group, for all annotators, and across groups
    (:func:`crs.eval.ranking.group_rankings`), with what the report says about the study."""
    order = [m for m in candidate_order or [] if m in ballots.models] + [
        m for m in ballots.models if m not in (candidate_order or [])
    ]
    result = ranking.group_rankings(ballots.by_group, tie_break, order)
    return {
        **result,
        "source": ballots.source,
        "models": ballots.models,
        "n_ballots": ballots.n_ballots,
        "n_annotators": len(ballots.annotators) if not ballots.annotators[0].startswith("#") else None,
        "n_prompts": len(ballots.prompt_ids),
        "n_ballots_with_ties": ballots.n_with_ties,
        "tie_break": tie_break,
        "candidate_order": order,
    }
