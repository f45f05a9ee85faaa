"""Batch prompt files and the run manifest that makes a batch resumable.

Prompt files (UTF-8, with or without the byte-order mark spreadsheet programs write):
* ``.csv``: a header with a ``prompt`` column (the Penguin Video Benchmark's ``,prompt`` layout,
  whose first, unnamed column is the index) read with the csv module in strict mode, so prompts
  may hold newlines, quotes and any Unicode; optional ``id``/``seed``/``negative_prompt`` columns.
  A quote left open swallows the rows after it into one prompt: a prompt holding lines that start
  with the ids missing from the file is refused with its line number.
* ``.txt``: one prompt per line; the id is the line number (1-based; blank lines are skipped).
* ``.jsonl``: one object per line with ``prompt`` and optional ``seed``, ``negative_prompt``, ``id``.

Every value is checked with its exact type by the same rules as a request (a seed is a whole
number, never ``1.7`` or ``true``; a prompt is text without NUL), and a bad one is refused with
the file and line. Every row has a stable id (a file-name-safe word); its seed is the row's own
or ``base_seed + id`` (integer ids; otherwise ``base_seed + row number``).

The manifest (``manifest.jsonl`` beside the outputs) gets one line per finished video, written
with one ``write`` and fsynced after the output file is complete. It is crash-safe: a torn last
line (a kill or power loss mid-write) is set aside in ``manifest.jsonl.torn`` before anything is
appended, and on ``--resume`` a finished output whose record was lost is recognised by the
settings embedded in it and recorded again instead of being rendered a second time.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyvideo.apps.video_io import read_output_metadata, to_json
from hyvideo.pipeline.types import MAX_SEED, UsageError, check_int, check_text

MANIFEST_NAME = "manifest.jsonl"
TORN_SUFFIX = ".torn"
MAX_FILE_BYTES = 64 * 2**20  # a prompt file larger than this is not a prompt file
ROW_FIELDS = ("prompt", "seed", "negative_prompt", "id", "image")
SAFE_ID = re.compile(r"[\w+-][\w.+-]{0,99}")  # becomes part of a file name: no '/', no leading '.'
log = logging.getLogger(__name__)


class PromptFileError(ValueError):
    """A prompt file that is missing, empty or malformed (the message names the line)."""


@dataclass(frozen=True)
class PromptJob:
    id: str
    prompt: str
    seed: int
    negative_prompt: str | None = None
    where: str = field(default="", compare=False)  # "FILE line N", for messages about this row
    image: Path | None = None  # image to video: the row's picture (relative paths: to the file's folder)


def video_ids(job_id: str, num_videos: int) -> list[str]:
    """The manifest ids of a job's videos: the job's id, or ``<id>.<i>`` for several videos."""
    return [job_id] if num_videos == 1 else [f"{job_id}.{i}" for i in range(num_videos)]


# --- reading the file ---------------------------------------------------------------------------

def _file_text(path: Path) -> str:
    """The file as text: UTF-8 (a leading byte-order mark dropped), no NUL, not huge."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise PromptFileError(f"{path}: {size / 2**20:.0f} MiB is too large for a prompt file "
                              f"(at most {MAX_FILE_BYTES // 2**20} MiB)")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise PromptFileError(f"{path} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                              "save the file as UTF-8") from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise PromptFileError(f"{path} line {line}: holds a NUL byte; a prompt file is plain text")
    return text


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based number, line) split on newlines only (``str.splitlines`` would also split inside a
    prompt at U+2028, form feeds and the like, and shift every line number after it)."""
    for n, line in enumerate(text.split("\n"), start=1):
        yield n, line.removesuffix("\r")


def _rows_txt(path: Path, text: str):
    for n, line in _lines(text):
        if line.strip():
            yield n, {"prompt": line.strip()}, f"{path} line {n}"


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"the field {twice[0]!r} is given twice")
    return dict(pairs)


def _rows_jsonl(path: Path, text: str):
    for n, line in _lines(text):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            row = json.loads(line, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise PromptFileError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:  # NaN, repeated keys, 5000-digit or deep values
            reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
            raise PromptFileError(f"{where}: not valid JSON ({reason})") from None
        if not isinstance(row, dict):
            raise PromptFileError(f"{where}: expected a JSON object like {{\"prompt\": \"...\"}}, "
                                  f"got {type(row).__name__}")
        yield n, row, where


# --- CSV: strict parsing, and the rows an open quote swallowed -------------------------------------

def _csv_records(path: Path, text: str):
    """(first line, last line, fields) per non-empty record; a malformed one names its line."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    end = 0
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if record:
                yield start, end, record
    except csv.Error as exc:
        raise PromptFileError(
            f"{path} line {end + 1}: malformed CSV ({exc}) in the row starting here; a quote opened "
            "there is not closed, or a quote inside a quoted field is not doubled (\"\")") from None


def _rows_csv(path: Path, text: str):
    records = list(_csv_records(path, text))
    if not records:
        raise PromptFileError(f"{path}: the file is empty; a CSV needs a header with a 'prompt' column")
    header = [h.strip() for h in records[0][2]]
    if "prompt" not in header:
        raise PromptFileError(f"{path}: the CSV header has no 'prompt' column (found {header})")
    unknown = [h for h in header if h not in ("", *ROW_FIELDS)]
    if unknown:
        raise PromptFileError(f"{path}: unknown CSV column {unknown[0]!r}; the columns are an unnamed "
                              "index, prompt, and optionally id, seed, negative_prompt, image")
    index = "id" if "id" in header else ("" if "" in header else None)
    if len(set(header)) != len(header):
        twice = sorted({h for h in header if header.count(h) > 1})
        raise PromptFileError(f"{path}: the CSV header names the column {twice[0]!r} twice")
    rows = []
    for start, end, record in records[1:]:
        where = f"{path} line {start}"
        if len(record) > len(header):
            raise PromptFileError(f"{where}: {len(record)} fields but the header has {len(header)}; "
                                  "quote a prompt that holds a comma")
        row = {h: v for h, v in zip(header, record) if h != "" or index == ""}
        row["id"] = row.pop(index, None) if index is not None else None
        rows.append((start, end, row, where))
    _check_swallowed(path, rows)
    return [(k, row, where) for k, (_, _, row, where) in enumerate(rows)]


def _check_swallowed(path: Path, rows: list) -> None:
    """Refuse a row whose quoted prompt runs on over lines that start with the ids of the rows
    missing after it: a quote left open has swallowed them (the csv module cannot tell)."""
    ids = [row["id"] for _, _, row, _ in rows]
    if not all(isinstance(i, str) and re.fullmatch(r"\d+", i.strip()) for i in ids):
        return  # only integer indexes say which rows are missing
    numbers = [int(i) for i in ids]
    for k, (start, end, row, where) in enumerate(rows):
        if end == start:
            continue
        following = numbers[k + 1] if k + 1 < len(numbers) else None
        for offset, line in enumerate(str(row.get("prompt", "")).split("\n")[1:], start=1):
            match = re.match(r'\s*"?(\d+)"?\s*,', line)
            if not match:
                continue
            n = int(match.group(1))
            if n > numbers[k] and (following is None or n < following) and n not in numbers:
                raise PromptFileError(
                    f"{where}: the prompt of row {ids[k].strip()} runs on to line {end} and holds "
                    f"{line.strip()[:40]!r} at line {start + offset}, which looks like row {n} of "
                    f"this file (missing from it): a quote is not closed; close it, or double a "
                    "quote inside a quoted prompt (\"\")")


# --- one row: exact types, the same checks as a request ----------------------------------------------

def _row_id(raw: Any, number: int, where: str) -> str:
    if raw is None or raw == "":
        return str(number)
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise PromptFileError(f"{where}: id must be text or a whole number, got {raw!r}")
    text = str(raw).strip()
    if not SAFE_ID.fullmatch(text):
        raise PromptFileError(f"{where}: id {text[:40]!r} cannot be part of a file name; use up to "
                              "100 letters, digits, '_', '-', '+' or '.' (not first)")
    return text


def _row_seed(raw: Any, job_id: str, number: int, base_seed: int, where: str, cells: bool) -> int:
    if raw is None or raw == "":
        seed = base_seed + (int(job_id) if re.fullmatch(r"-?\d+", job_id) else number)
        if not 0 <= seed <= MAX_SEED:
            raise PromptFileError(f"{where}: the seed of row {job_id} (--seed {base_seed} + {seed - base_seed}) "
                                  f"is {seed}, outside 0 to {MAX_SEED}; give the row a seed or a smaller --seed")
        return seed
    if cells and isinstance(raw, str):  # a CSV cell is text: digits only (int() would take '1_000', ' 5 ')
        if not re.fullmatch(r"\s*-?\d{1,20}\s*", raw):
            raise PromptFileError(f"{where}: seed {raw!r} is not a whole number (0 to {MAX_SEED})")
        raw = int(raw)
    return _checked(where, check_int, "seed", raw, 0, MAX_SEED)


def _checked(where: str, check, *args, **kwargs):
    """A request check applied to a row's value; its message prefixed with the file and line."""
    try:
        return check(*args, **kwargs)
    except UsageError as exc:
        raise PromptFileError(f"{where}: {exc}") from None


def _row_image(raw: Any, folder: Path, where: str) -> Path | None:
    """A row's image: a path (relative to the prompt file's folder), checked to be a file."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise PromptFileError(f"{where}: image must be a file path, got {raw!r}")
    path = Path(raw.strip())
    path = path if path.is_absolute() else folder / path
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "not found"
        raise PromptFileError(f"{where}: image {raw.strip()!r} {what} (looked at {path}); paths are relative "
                              "to the prompt file's folder")
    return path


def _job(row: dict, number: int, where: str, base_seed: int, cells: bool,
         folder: Path = Path(".")) -> PromptJob:
    """One row as a job; ``cells``: the values are text (CSV), else typed (JSON)."""
    unknown = sorted(set(row) - set(ROW_FIELDS))
    if unknown:
        raise PromptFileError(f"{where}: unknown field {unknown[0]!r}; a row has {', '.join(ROW_FIELDS)}")
    prompt = row.get("prompt")
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        raise PromptFileError(f"{where}: empty or missing prompt")
    prompt = _checked(where, check_text, "prompt", prompt, required=True).strip()
    negative = row.get("negative_prompt")
    negative = _checked(where, check_text, "negative_prompt", negative, required=False)
    job_id = _row_id(row.get("id"), number, where)
    seed = _row_seed(row.get("seed"), job_id, number, base_seed, where, cells)
    image = _row_image(row.get("image"), folder, where)
    return PromptJob(job_id, prompt, seed, (negative or "").strip() or None, where, image)


def read_prompt_file(path: str | Path, base_seed: int) -> list[PromptJob]:
    """Parse a prompt file into jobs; raise :class:`PromptFileError` naming the file and line."""
    path = Path(path)
    if path.is_dir():
        raise PromptFileError(f"prompt file {path} is a folder; give a .csv, .txt or .jsonl file")
    if not path.is_file():
        raise PromptFileError(f"prompt file not found: {path}")
    readers = {".csv": _rows_csv, ".txt": _rows_txt, ".jsonl": _rows_jsonl}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise PromptFileError(f"{path}: unsupported prompt file type {path.suffix!r}; use .csv, .txt or .jsonl")
    try:
        text = _file_text(path)
    except OSError as exc:
        raise PromptFileError(f"cannot read prompt file {path}: {exc.strerror}") from None
    jobs: list[PromptJob] = []
    seen: dict[str, str] = {}
    for number, row, where in reader(path, text):
        job = _job(row, number, where, base_seed, cells=reader is _rows_csv, folder=path.parent)
        if job.id in seen:
            raise PromptFileError(f"{where}: duplicate id {job.id!r} (first at {seen[job.id]})")
        seen[job.id] = where.rpartition(" ")[2]
        jobs.append(job)
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
            if int(high) - int(low) > 10_000_000:
                raise PromptFileError(f"--prompt-ids {spec!r}: range {part} is larger than any prompt file")
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


# --- the manifest -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Expected:
    """A video a batch will write: its manifest id, its job and how its file name starts (the
    id, not the seed: a resumed batch without --seed draws another base seed)."""

    video: str
    job: str
    prefix: str


class Manifest:
    """Append-only JSONL record of finished outputs, safe against a kill at any point."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST_NAME

    def create(self) -> None:
        """Make the manifest exist (a batch killed before its first video still resumes) and
        set aside a torn last line."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab"):
            pass
        self.repair()

    def repair(self) -> None:
        """A last line without its newline was cut by a kill or power loss: a complete record
        gets its newline; a torn one is moved to ``manifest.jsonl.torn`` (nothing is deleted) so
        the next record starts on a line of its own."""
        if not self.path.is_file():
            return
        with open(self.path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0 or (f.seek(size - 1), f.read(1))[1] == b"\n":
                return
            cut = _last_line_start(f, size)
            f.seek(cut)
            tail = f.read()
            if _record(tail) is not None:
                f.seek(size)
                f.write(b"\n")
            else:
                with open(self.path.with_name(MANIFEST_NAME + TORN_SUFFIX), "ab") as torn:
                    torn.write(tail + b"\n")
                    torn.flush()
                    os.fsync(torn.fileno())
                f.truncate(cut)
                log.warning("%s: its last line was cut off by a crash; set aside in %s%s",
                            self.path, MANIFEST_NAME, TORN_SUFFIX)
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> list[dict]:
        """Every readable record (a line that is not one is skipped with a warning)."""
        if not self.path.is_file():
            return []
        records, bad = [], 0
        for line in self.path.read_bytes().split(b"\n"):
            if line.strip():
                record = _record(line)
                bad += record is None
                records.append(record) if record is not None else None
        if bad:
            log.warning("%s: %d line(s) are not records and are ignored", self.path, bad)
        return records

    def output_of(self, record: dict) -> Path | None:
        """The record's output, looked up beside the manifest (the folder may have moved)."""
        name = Path(str(record.get("output", ""))).name
        return self.folder / name if name and (self.folder / name).exists() else None

    def done_ids(self) -> set[str]:
        """Ids of the videos recorded with their output present."""
        return {str(r["id"]) for r in self.records() if r.get("id") is not None and self.output_of(r)}

    def require(self) -> None:
        """--resume continues an earlier run: its manifest must exist."""
        if not self.path.is_file():
            raise PromptFileError(f"--resume: no manifest at {self.path}; run the batch once without --resume")

    def pending(self, jobs: list[PromptJob], num_videos: int = 1,
                done: set[str] | None = None) -> list[PromptJob]:
        """The jobs with a video not in ``done`` (default: :meth:`done_ids`; reads only)."""
        self.require()
        done = self.done_ids() if done is None else done
        todo = [j for j in jobs if not set(video_ids(j.id, num_videos)) <= done]
        log.info("resume: %d done, %d to go", len(jobs) - len(todo), len(todo))
        return todo

    def remove_partials(self) -> None:
        """Remove the temporary files a kill left mid-write (outputs are published whole)."""
        for stale in self.folder.glob(".*.partial"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)

    def lost_records(self, expected: list[Expected], done: set[str]) -> list[dict]:
        """The records to write again for finished outputs whose record was lost (a kill between
        the file and its line, or a torn line): each output is recognised by the id in its
        embedded settings. Reads only (:meth:`recover` writes them); ``done``: the recorded ids."""
        recorded = {Path(str(r.get("output", ""))).name for r in self.records()}
        found = []
        for want in expected:
            if want.video in done:
                continue
            for path in sorted(self.folder.glob(f"{glob_escape(want.prefix)}*")):
                if path.name in recorded or path.name.endswith(".partial"):
                    continue
                meta = read_output_metadata(path)
                if meta and str(meta.get("id")) == want.job and str(meta.get("video", want.job)) == want.video:
                    found.append({**meta, "id": want.video, "job": want.job, "output": str(path),
                                  "recovered": True})
                    break
        return found

    def recover(self, records: list[dict]) -> None:
        """Write the :meth:`lost_records` found, so their videos are not rendered twice."""
        for record in records:
            self.append(record)
            log.info("resume: %s was finished but not recorded; recorded it now", Path(record["output"]).name)

    def append(self, record: dict[str, Any]) -> None:
        """One record as one line, in a single write, flushed to disk."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.repair()
        line = (to_json(record) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.path} ({written} of {len(line)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)


def _last_line_start(f, size: int, chunk: int = 1 << 16) -> int:
    """Offset just after the last newline of an open binary file (0 if it has none)."""
    end = size
    while end > 0:
        start = max(0, end - chunk)
        f.seek(start)
        found = f.read(end - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def _record(line: bytes) -> dict | None:
    """A manifest line as a record, or None when it is not one (torn, or not JSON)."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)
