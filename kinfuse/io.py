"""Files a run writes and reads: atomic writes and JSONL, in one place.

Every file a run reads back (records, caches, checkpoints, logs, the adapter, exports) goes
through here, so a crash or a full disk mid-write leaves the previous file whole (or none),
never a truncated one that a rerun would trip over.
"""

from __future__ import annotations

import json
import os
import shutil
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import KinfuseError


def _temp_beside(path: Path, suffix: str = ".tmp", *, folder: bool = False) -> Path:
    """A new, unique file or folder beside `path` (same filesystem, so os.replace is an atomic
    rename), made with the user's umask: mkstemp/mkdtemp would make it private (0600/0700)
    and the final file would keep that."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            if folder:
                tmp.mkdir()
            else:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically: a temporary file beside it, then a rename."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> Path:
    """Write `obj` as JSON atomically (non-JSON values, such as paths, as their str)."""
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    """Write one JSON object per line, atomically."""
    return write_text(path, "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))


def read_jsonl(path: str | os.PathLike, *, error: type[KinfuseError] = KinfuseError) -> list[dict[str, Any]]:
    """JSON objects, one per non-empty line; a missing file or a bad line raises `error` naming
    the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise error(f"no such file: {path}")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise error(f"{path}:{lineno}: not a JSON object")
        rows.append(row)
    return rows


@contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside `path` to fill; when the block ends without an error it
    replaces `path`, otherwise it is deleted. An existing `path` is moved aside, not removed,
    until the new folder is in place, so readers see the old folder or the whole new one,
    never half of it, and a failed swap puts the old one back."""
    path = Path(path)
    tmp = _temp_beside(path, folder=True)
    try:
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
            return
        aside = _temp_beside(path, ".old", folder=True)
        os.replace(path, aside / path.name)
        try:
            os.replace(tmp, path)
        except OSError:
            os.replace(aside / path.name, path)
            raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
