"""Reading raw rows: local files (.jsonl, .json, .csv, .parquet), the hub, the embedded data.

Every source becomes a :class:`Table`: the rows as plain dicts plus, for each row, the
line or row number it came from, so that an adapter can say *where* a bad row is
(``data/train.jsonl, line 17: empty 'reply'``).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crs.data.registry import EMBEDDED_DEMO, EMBEDDED_SOURCES, registered
from crs.data.schema import DataError
from crs.io import JsonLinesError, iter_jsonl, open_text

LOGGER = logging.getLogger(__name__)

HUB_PREFIX = "hub:"


@dataclass
class Table:
    """Rows read from one source, with where each row came from.

    ``numbers[i]`` is the 1-based line (JSON lines, CSV) or row (JSON list, Parquet,
    hub) number of ``rows[i]``; :meth:`where` formats it for error messages.
    """

    name: str  # the file path or hub id, as shown in messages
    rows: list[dict[str, Any]]
    numbers: list[int]
    unit: str = "row"  # "line" or "row"
    columns: list[str] = field(default_factory=list)  # every column seen, first-seen order

    def where(self, index: int) -> str:
        """``"<name>, line 12"`` for the row at ``index``."""
        return f"{self.name}, {self.unit} {self.numbers[index]}"

    def __len__(self) -> int:
        return len(self.rows)


def read_rows(source: str, split: str = "train", hub_config: str | None = None) -> Table:
    """Read every row of ``source``.

    ``source`` is an embedded source (``embedded:crs-demo``, :data:`~crs.data.registry.EMBEDDED_SOURCES`),
    ``hub:<dataset id>`` (loaded with ``datasets.load_dataset(id, hub_config, split=split)``) or a
    local file. ``split`` only selects a hub split; local files are one split each (the ``crs_demo``
    adapter filters its rows by their ``split`` field itself).
    """
    if source in EMBEDDED_SOURCES:
        return _read_file(registered(EMBEDDED_SOURCES[source])())
    if source.startswith(HUB_PREFIX):
        return _read_hub(source[len(HUB_PREFIX) :], split, hub_config)
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(
            f"data file not found: {path} (data.source); give a .jsonl/.json/.csv/.parquet "
            f"file, hub:<dataset id> or {EMBEDDED_DEMO}"
        )
    return _read_file(path)


def apply_columns(table: Table, columns: dict[str, str]) -> Table:
    """Rename source columns to canonical names in place: ``columns`` maps canonical -> source.

    A source column that the table does not have is an error naming the file and the
    columns it does have (the usual cause is a typo in ``data.columns``).
    """
    if not columns:
        return table
    missing = [src for src in columns.values() if src not in table.columns]
    if missing:
        raise DataError(
            f"{table.name}: column(s) {missing} named in data.columns not found; columns found: {table.columns}"
        )
    for row in table.rows:
        # Read every source value before writing, so that swaps (a->b, b->a) work.
        values = {canon: row[src] for canon, src in columns.items() if src in row}
        for src in columns.values():
            row.pop(src, None)
        row.update(values)
    renamed = [c for c in table.columns if c not in columns.values()]
    table.columns = renamed + [c for c in columns if c not in renamed]
    return table


# --------------------------------------------------------------------------- file formats


def _read_file(path: Path) -> Table:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        reader = _read_jsonl
    elif name.endswith((".json", ".json.gz")):
        reader = _read_json
    elif name.endswith(".csv"):
        reader = _read_csv
    elif name.endswith(".parquet"):
        reader = _read_parquet
    else:
        raise DataError(f"{path}: unsupported file type; use .jsonl, .json, .csv or .parquet")
    # The reader opens the file; what it cannot decode is said here, naming file and line.
    try:
        table = reader(path)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{_first_non_utf8_line(path)}: not UTF-8 text ({err.reason}); re-save the file as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)"
        ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(
            f"{path}: not a gzip file, or a truncated one ({err}); decompress it and drop the .gz "
            "from its name, or recompress it with gzip"
        ) from None
    if not table.rows:
        raise DataError(f"{path}: no rows")
    LOGGER.info("read %d rows from %s", len(table.rows), path)
    return table


def _first_non_utf8_line(path: Path) -> str:
    """``"<path>, line N"`` for the first line that is not UTF-8 (just the path if none is found)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with contextlib.suppress(OSError, EOFError, zlib.error), opener(path, "rb") as handle:
        for lineno, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return f"{path}, line {lineno}"
    return str(path)


def _columns_of(rows: list[dict[str, Any]]) -> list[str]:
    # JSON rows may differ in keys; the union is what "columns found" should list.
    return list(dict.fromkeys(key for row in rows for key in row))


def _read_jsonl(path: Path) -> Table:
    rows, numbers = [], []
    try:
        for lineno, row in iter_jsonl(path):
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {lineno}: expected a JSON object per line")
            rows.append(row)
            numbers.append(lineno)
    except JsonLinesError as err:
        raise DataError(str(err)) from None
    return Table(str(path), rows, numbers, unit="line", columns=_columns_of(rows))


def _read_json(path: Path) -> Table:
    with open_text(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of row objects")
    for index, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}, row {index}: expected an object")
    numbers = list(range(1, len(data) + 1))
    return Table(str(path), data, numbers, unit="row", columns=_columns_of(data))


def _read_csv(path: Path) -> Table:
    """CSV cells are strings; adapters parse numbers and JSON-encoded lists themselves."""
    rows, numbers = [], []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])  # reads the header line
        # A quoted cell may span lines, so report the line each record starts on.
        start = reader.line_num + 1
        for row in reader:
            if None in row:
                raise DataError(f"{path}, line {start}: more cells than header columns")
            rows.append(row)
            numbers.append(start)
            start = reader.line_num + 1
    return Table(str(path), rows, numbers, unit="line", columns=columns)


def _read_parquet(path: Path) -> Table:
    import pyarrow as pa  # comes with datasets; imported late to keep startup fast
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except pa.ArrowException as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    rows = table.to_pylist()
    return Table(str(path), rows, list(range(1, len(rows) + 1)), columns=table.column_names)


def _read_hub(dataset_id: str, split: str, hub_config: str | None) -> Table:
    import datasets  # heavy; only users of hub: sources pay for it

    try:
        dataset = datasets.load_dataset(dataset_id, hub_config, split=split)
    except Exception as err:  # network, auth, unknown split: all worth one clear line
        raise DataError(f"hub:{dataset_id} (config {hub_config}, split {split}): could not load: {err}") from err
    rows = dataset.to_list()
    name = f"hub:{dataset_id}[{split}]" if hub_config is None else f"hub:{dataset_id}/{hub_config}[{split}]"
    if not rows:
        raise DataError(f"{name}: no rows")
    LOGGER.info("read %d rows from %s", len(rows), name)
    return Table(name, rows, list(range(1, len(rows) + 1)), columns=list(dataset.column_names))


def csv_rows(path: Path, text: str, required: Sequence[str], shape: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("<path>, line N", row)`` for each row of a CSV text, keys and values stripped.

    A missing required column raises :class:`DataError` naming the columns found and, in
    ``shape``, what such a file holds.
    """
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; columns found: {columns}; {shape}")
    for number, raw in enumerate(reader, start=2):  # line 1 is the header
        yield (
            f"{path}, line {number}",
            {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k is not None},
        )
