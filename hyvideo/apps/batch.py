"""Batch prompt files and the run manifest that makes a batch resumable.

Prompt files:
* ``.csv``: a header with a ``prompt`` column (the Penguin Video Benchmark's ``,prompt`` layout,
  whose first, unnamed column is the index) read with the csv module, so prompts may hold
  newlines, quotes and any Unicode; optional ``id``/``seed``/``negative_prompt`` columns.
* ``.txt``: one prompt per line; the id is the line number (1-based; blank lines are skipped).
* ``.jsonl``: one object per line with ``prompt`` and optional ``seed``, ``negative_prompt``, ``id``.

Every row has a stable id; its seed is the row's own seed or ``base_seed + id`` (integer ids;
otherwise ``base_seed + row number``). The manifest (``manifest.jsonl`` beside the videos) gets
one line per finished video, appended and flushed, so a kill loses at most the video in progress.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.jsonl"
log = logging.getLogger(__name__)


class PromptFileError(ValueError):
    """A prompt file that is missing, empty or malformed (the message names the line)."""


@dataclass(frozen=True)
class PromptJob:
    id: str
    prompt: str
    seed: int
    negative_prompt: str | None = None


def _seed_for(row_seed: Any, job_id: str, row_number: int, base_seed: int, where: str) -> int:
    if row_seed not in (None, ""):
        try:
            return int(row_seed)
        except (TypeError, ValueError):
            raise PromptFileError(f"{where}: seed {row_seed!r} is not an integer") from None
    return base_seed + (int(job_id) if job_id.lstrip("-").isdigit() else row_number)


def _rows_csv(path: Path):
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "prompt" not in fields:
            raise PromptFileError(f"{path}: the CSV header has no 'prompt' column (found {fields})")
        index_col = "id" if "id" in fields else ("" if "" in fields else None)
        for n, row in enumerate(reader):
            if None in row:
                raise PromptFileError(f"{path}: row {n + 1} has more fields than the header")
            job_id = row.get(index_col) if index_col is not None else None
            yield (job_id if job_id not in (None, "") else str(n)), row, f"{path} row {n + 1}", n


def _rows_txt(path: Path):
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            yield str(n), {"prompt": line.strip()}, f"{path} line {n}", n


def _rows_jsonl(path: Path):
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptFileError(f"{path} line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise PromptFileError(f"{path} line {n}: expected a JSON object")
        yield str(row.get("id", n)), row, f"{path} line {n}", n


def read_prompt_file(path: str | Path, base_seed: int) -> list[PromptJob]:
    """Parse a prompt file into jobs; raise :class:`PromptFileError` with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"prompt file not found: {path}")
    readers = {".csv": _rows_csv, ".txt": _rows_txt, ".jsonl": _rows_jsonl}
    if path.suffix.lower() not in readers:
        raise PromptFileError(f"{path}: unsupported prompt file type; use .csv, .txt or .jsonl")
    jobs: list[PromptJob] = []
    seen: set[str] = set()
    try:
        for job_id, row, where, n in readers[path.suffix.lower()](path):
            prompt = row.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise PromptFileError(f"{where}: empty or missing prompt")
            if job_id in seen:
                raise PromptFileError(f"{where}: duplicate id {job_id!r}")
            seen.add(job_id)
            negative = row.get("negative_prompt") or None
            jobs.append(PromptJob(job_id, prompt.strip(), _seed_for(row.get("seed"), job_id, n, base_seed, where), negative))
    except UnicodeDecodeError:
        raise PromptFileError(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise PromptFileError(f"{path}: malformed CSV ({exc})") from None
    if not jobs:
        raise PromptFileError(f"{path}: no prompts in the file")
    return jobs


def select_ids(jobs: list[PromptJob], spec: str | None) -> list[PromptJob]:
    """The jobs whose ids ``spec`` names (``0-9,172``: integer ranges and single ids; None: all).

    Every id in ``spec`` must exist in the file (a typo would otherwise silently run nothing).
    """
    if not spec:
        return jobs
    wanted: set[str] = set()
    for part in spec.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        if dash and low.isdigit() and high.isdigit():
            if int(low) > int(high):
                raise PromptFileError(f"--prompt-ids {spec!r}: range {part} runs backwards")
            wanted.update(str(i) for i in range(int(low), int(high) + 1))
        elif part:
            wanted.add(part)
        else:
            raise PromptFileError(f"--prompt-ids {spec!r}: empty entry; use ids and ranges like 0-9,172")
    known = {job.id for job in jobs}
    missing = sorted(wanted - known, key=lambda s: (len(s), s))
    if missing and not (wanted & known):
        raise PromptFileError(f"--prompt-ids {spec!r}: no such id in the prompt file (first missing: {missing[0]})")
    return [job for job in jobs if job.id in wanted]


class Manifest:
    """Append-only JSONL record of finished outputs."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / MANIFEST_NAME

    def create(self) -> None:
        """Make the (empty) manifest exist, so a batch killed before its first video resumes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)

    def pending(self, jobs: list[PromptJob]) -> list[PromptJob]:
        """The jobs not yet done; partial files left by a kill mid-write are removed."""
        if not self.path.is_file():
            raise PromptFileError(f"--resume: no manifest at {self.path}; run the batch once without --resume")
        for stale in self.path.parent.glob(".*.partial"):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        done = self.done_ids()
        todo = [j for j in jobs if j.id not in done]
        log.info("resume: %d done, %d to go", len(jobs) - len(todo), len(todo))
        return todo

    def done_ids(self) -> set[str]:
        if not self.path.is_file():
            return set()
        done = set()
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: that video is simply redone
            if record.get("id") is not None and Path(record.get("output", "")).exists():
                done.add(str(record["id"]))
        return done

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
