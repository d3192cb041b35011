"""Results on disk under cache/results/<kind>/, keyed by everything that changes a result.

A key is a dict (model source and revision, dtype, device, dataset content hash, method, metric, ...); its SHA-256
names the file. Each file stores its key and a checksum of its payload; writes are atomic (temp file + rename). A file
that does not parse, whose checksum or key does not match, is treated as absent, removed, and recomputed by the
caller: it is never shown.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from headscope.paths import results_dir
from headscope.serialize import from_payload, to_payload

FORMAT = 1
# The revision of a hub model whose commit is not known: its results cannot be told from those of another commit,
# so they are neither stored nor read (computed each time)
UNKNOWN_REVISION = "unknown"
T = TypeVar("T")
log = logging.getLogger(__name__)


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _checksum(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class CachedEntry:
    key: dict[str, Any]
    payload: Any
    path: Path


class ResultsCache:
    """JSON results by kind ("ablation", "head-scores", ...) and key."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else results_dir()

    def path(self, kind: str, key: dict[str, Any]) -> Path:
        return self.root / kind / f"{key_digest(key)}.json"

    def load(self, kind: str, key: dict[str, Any]) -> Any | None:
        """The payload stored under `key`, or None (absent, partial or corrupt; a bad file is removed; a model of
        unknown revision)."""
        if key.get("model_revision") == UNKNOWN_REVISION:
            return None
        entry = self._read(self.path(kind, key))
        if entry is None or entry.key != key:
            return None
        return entry.payload

    def store(self, kind: str, key: dict[str, Any], payload: Any) -> Path | None:
        """Save a computed result; None where the folder cannot be written (read-only, full, a file in the way): the
        result the caller holds is worth more than its copy, so that is a one-line warning, never an error. A model
        of unknown revision is not stored (None, no warning)."""
        if key.get("model_revision") == UNKNOWN_REVISION:
            return None
        path = self.path(kind, key)
        body = json.dumps({"format": FORMAT, "key": key, "checksum": _checksum(payload), "payload": payload},
                          ensure_ascii=False)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(body)}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as error:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            log.warning("headscope: warning: the result was not saved in %s (%s); it is shown but will be "
                        "computed again next time", path.parent, error.strerror or error)
            return None
        return path

    def entries(self, kind: str, matching: dict[str, Any] | None = None) -> list[CachedEntry]:
        """Every valid entry of a kind, newest first; with `matching` (e.g. a model's identity), only those whose key
        holds each of its items."""
        folder = self.root / kind
        if not folder.is_dir():
            return []
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        wanted = (matching or {}).items()
        return [entry for entry in (self._read(p) for p in files)
                if entry is not None and all(entry.key.get(k) == v for k, v in wanted)]

    def readable(self, kind: str, parse: Callable[[CachedEntry], T], matching: dict[str, Any] | None = None
                 ) -> list[T]:
        """entries() parsed into results, newest first; an entry `parse` cannot read (written by another engine
        version's format, or edited by hand) is skipped, never shown half-read and never an error for the page."""
        out = []
        for entry in self.entries(kind, matching):
            try:
                out.append(parse(entry))
            except (KeyError, TypeError, ValueError, AttributeError, IndexError):
                continue
        return out

    def remove(self, kind: str, matching: dict[str, Any]) -> int:
        """Remove the entries of a kind whose key holds each item of `matching` (e.g. one model's identity); returns
        how many went. Everything else stays: other models' results, other kinds."""
        removed = 0
        for entry in self.entries(kind, matching):
            with contextlib.suppress(FileNotFoundError):
                entry.path.unlink()
                removed += 1
        return removed

    def clear(self, kind: str | None = None) -> int:
        """Remove stored results (of one kind, or all); returns how many files went."""
        folders = [self.root / kind] if kind else [p for p in self.root.glob("*") if p.is_dir()]
        removed = 0
        for folder in folders:
            for file in folder.glob("*.json"):
                file.unlink(missing_ok=True)
                removed += 1
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        return removed

    @staticmethod
    def _read(path: Path) -> CachedEntry | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            ok = (isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("key"), dict)
                  and data.get("checksum") == _checksum(data.get("payload"))
                  and path.stem == key_digest(data["key"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            ok = False
        if not ok:
            with contextlib.suppress(OSError):  # a folder we may not write to: the bad file is skipped all the same
                path.unlink(missing_ok=True)
            return None
        return CachedEntry(data["key"], data["payload"], path)


def load_result(cache: ResultsCache | None, kind: str, key: dict[str, Any], result_type: type[T]) -> T | None:
    """The result of `result_type` (a frozen dataclass with `key` and `cached` fields) stored under `key`, or None."""
    cache = cache if cache is not None else ResultsCache()
    stored = cache.load(kind, key)
    return None if stored is None else from_payload(result_type, stored, key=key, cached=True)


def stored_or_computed(cache: ResultsCache | None, kind: str, key: dict[str, Any], result_type: type[T],
                       compute: Callable[[], T], *, use_cache: bool = True) -> T:
    """The stored result for exactly this key (unless use_cache is False), else compute() stored under it. A
    computation that raises (cancelled, refused) stores nothing."""
    cache = cache if cache is not None else ResultsCache()
    if use_cache:
        stored = load_result(cache, kind, key, result_type)
        if stored is not None:
            return stored
    result = compute()
    cache.store(kind, key, to_payload(result))
    return result


def stored_results(cache: ResultsCache | None, kind: str, result_type: type[T],
                   matching: dict[str, Any] | None = None) -> list[T]:
    """Every readable stored result of a kind (optionally only those whose key holds `matching`), newest first."""
    cache = cache if cache is not None else ResultsCache()
    return cache.readable(kind, lambda entry: from_payload(result_type, entry.payload, key=entry.key, cached=True),
                          matching)
