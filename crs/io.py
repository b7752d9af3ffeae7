"""Small file helpers: atomic writes, JSON lines.

Every result file crs writes goes through ``write_*_atomic`` so that a crash leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; give it the mode a plain open() would have.
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replaced_aside(target: str | Path) -> Path:
    """Where :func:`folder_written_atomically` keeps the old ``target`` while the new one moves in."""
    target = Path(target)
    return target.parent / f".{target.name}.replaced"


def recover_replaced(target: str | Path) -> None:
    """Finish a folder swap that a crash interrupted (see :func:`folder_written_atomically`).

    The old folder aside and no ``target``: the crash fell between the two renames; the old
    folder goes back. Both there: only the deletion of the old one was left to do.
    """
    target, aside = Path(target), replaced_aside(target)
    if not aside.is_dir():
        return
    if target.exists():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(aside, target)
        logger.warning("%s: a crash interrupted its replacement; the earlier copy is back in place", target)


def recover_replaced_in(folder: str | Path) -> None:
    """:func:`recover_replaced` for every interrupted swap inside ``folder``."""
    for aside in Path(folder).glob(".*.replaced"):
        recover_replaced(aside.parent / aside.name[1 : -len(".replaced")])


@contextlib.contextmanager
def folder_written_atomically(target: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``target``; once the block ends, it becomes ``target``.

    A crash inside the block leaves ``target`` as it was (the temporary folder is removed
    on errors; a ``kill -9`` leaves only a hidden ``.name.*`` folder). An existing ``target``
    is first renamed aside (:func:`replaced_aside`), then the new folder renamed in, then the
    old one deleted: at every instant one complete copy exists, and :func:`recover_replaced`
    puts the old one back if a crash fell between the renames. With ``replace`` False an
    existing ``target`` (another process won a race) is kept and the new copy dropped.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_replaced(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes it 0700
    try:
        yield tmp
        if target.exists() and not replace:
            shutil.rmtree(tmp)
            return
        aside = replaced_aside(target)
        if target.exists():
            os.replace(target, aside)
        os.replace(tmp, target)
        shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        recover_replaced(target)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Atomically write a text file (UTF-8)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[Any]) -> None:
    """Write one JSON object per line, atomically."""
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    """Append one JSON row to a metrics log (one line per write, flushed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()


class JsonLinesError(ValueError):
    """A line of a JSON-lines file that is not valid JSON; the message names the file and line."""


def open_text(path: str | Path) -> IO[str]:
    """A UTF-8 text file, decompressed on the fly when its name ends in ``.gz``."""
    path = Path(path)
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def iter_jsonl(path: str | Path, torn_tail_ok: bool = False) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of a JSON-lines file (``.gz`` too).

    A bad line raises :class:`JsonLinesError` naming the file and line. With ``torn_tail_ok``
    (logs crs appends to), a bad *last* line is what a crash mid-append leaves: it is
    dropped with a warning instead.
    """
    with open_text(path) as handle:
        lines = handle.read().splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as err:
            if torn_tail_ok and lineno == len(lines):
                logger.warning("%s, line %d: dropped a torn last line (a crash while it was written)", path, lineno)
                return
            raise JsonLinesError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from None


def read_jsonl(path: str | Path, torn_tail_ok: bool = False) -> list[Any]:
    """Every row of a JSON-lines file (see :func:`iter_jsonl`)."""
    return [row for _, row in iter_jsonl(path, torn_tail_ok)]


def truncate_jsonl(path: str | Path, last_step: int, step_key: str = "step") -> int:
    """Keep only the rows of a step log up to ``last_step`` (and drop a torn last line).

    A resumed run repeats the steps after its checkpoint; their old rows must go, or
    the log would hold them twice. Returns how many rows were dropped.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    rows = read_jsonl(path, torn_tail_ok=True)
    kept = [r for r in rows if r.get(step_key, 0) <= last_step]
    dropped = len(rows) - len(kept)
    write_jsonl_atomic(path, kept)
    if dropped:
        logger.info("%s: dropped %d row(s) logged after step %d (they are run again)", path, dropped, last_step)
    return dropped
