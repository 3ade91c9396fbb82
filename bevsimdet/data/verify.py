"""``bevsimdet prepare --verify``: check every sensor file the info files reference.

An incomplete download or extraction (nuScenes comes in tens of tarballs) leaves files missing,
empty or cut short. This reads each camera image, LiDAR keyframe and LiDAR sweep of every split
once, with the same checks the training readers make (:mod:`bevsimdet.data.files`: markers,
decoding, the recorded image size, whole float32 points, finite values), plus one the readers
cannot afford: a JPEG whose decoder printed a warning (libjpeg's "Corrupt JPEG data: premature
end of data segment" and the like, for damage between intact markers) is bad too. The checks
run in ``workers`` processes; each one points its C-level stderr at a private file, so that a
decoder message is attributed to the image being decoded.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from bevsimdet.data.classes import CAMERAS
from bevsimdet.data.files import decode_image, read_points
from bevsimdet.errors import DataError

KINDS = ("camera", "lidar", "sweep")
BAD_LIST = "bad_files.txt"  # written next to the info files when something is bad
SHOWN = 20  # bad files printed in the summary; all of them go to BAD_LIST


@dataclass(frozen=True)
class FileJob:
    """One file to check: ``kind`` of :data:`KINDS`, ``path`` relative to the dataroot, ``size``
    the (H, W) a camera image must have (None: not recorded)."""

    kind: str
    path: str
    size: tuple[int, int] | None = None


@dataclass
class BadFile:
    kind: str
    path: str
    problem: str


@dataclass
class VerifyReport:
    """What :func:`verify_files` found: files and bytes per kind, the bad files, the time taken."""

    dataroot: Path
    files: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    nbytes: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    bad: list[BadFile] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.files.values())

    @property
    def ok(self) -> bool:
        return not self.bad


def jobs_of(infos: Iterable[Any]) -> list[FileJob]:
    """Every distinct file of the :class:`~bevsimdet.data.infos.InfoFile` s ``infos``; a file that
    is one sample's keyframe and another's sweep is checked once, as a keyframe."""
    seen: set[str] = set()
    jobs: list[FileJob] = []

    def add(job: FileJob) -> None:
        if job.path not in seen:
            seen.add(job.path)
            jobs.append(job)

    infos = list(infos)
    for info in infos:
        for s in info.samples:
            for cam in CAMERAS:
                c = s.cams[cam]
                add(FileJob("camera", c.path, (c.height, c.width) if c.width and c.height else None))
            add(FileJob("lidar", s.lidar_path))
    for info in infos:
        for s in info.samples:
            for w in s.sweeps:
                add(FileJob("sweep", w.path))
    return jobs


# --------------------------------------------------------------------------------------------
# the worker side

_WORKER: dict[str, Any] = {}


def _init_worker(dataroot: str, load_dim: int) -> None:
    """Route this worker's fd 2 (where libjpeg prints its warnings) into a private file."""
    capture = tempfile.TemporaryFile()
    os.dup2(capture.fileno(), 2)
    _WORKER.update(dataroot=Path(dataroot), load_dim=load_dim, capture=capture)


def _decoder_messages(start: int) -> str:
    """What was written to fd 2 since offset ``start`` (fd 2 and the capture file share it)."""
    end = os.lseek(2, 0, os.SEEK_CUR)
    if end <= start:
        return ""
    text = os.pread(2, min(end - start, 400), start).decode("utf-8", "replace")
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def check_file(job: FileJob, dataroot: Path, load_dim: int) -> tuple[int, str | None]:
    """(bytes read, the problem or None) of one file, with the readers' checks."""
    path = dataroot / job.path
    try:
        if job.kind == "camera":
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return 0, "is missing"
            except OSError as e:
                return 0, f"cannot be read ({e.strerror or type(e).__name__})"
            start = os.lseek(2, 0, os.SEEK_CUR) if _WORKER else 0
            decode_image(data, path, size=job.size)
            messages = _decoder_messages(start) if _WORKER else ""
            if messages:
                return len(data), f"is damaged (the JPEG decoder reports: {messages})"
            return len(data), None
        points = read_points(path, load_dim)
        return points.nbytes, None
    except DataError as e:
        # the problem alone: the report names the file and prints one fix for all of them
        msg = str(e).removesuffix(f" -> {e.fix}") if e.fix else str(e)
        return 0, msg.split(f"{path} ", 1)[-1]


def _check(job: FileJob) -> tuple[FileJob, int, str | None]:
    nbytes, problem = check_file(job, _WORKER["dataroot"], _WORKER["load_dim"])
    return job, nbytes, problem


# --------------------------------------------------------------------------------------------
# the driver


def verify_files(jobs: Sequence[FileJob], dataroot: str | Path, *, load_dim: int = 5, workers: int = 2, progress: bool = True) -> VerifyReport:
    """Check ``jobs`` in ``workers`` processes (always at least one: the decoder-message capture
    must not take this process's stderr) with a progress bar."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from bevsimdet.progress import progress_bar

    dataroot = Path(dataroot)
    report = VerifyReport(dataroot)
    t0 = time.perf_counter()
    methods = multiprocessing.get_all_start_methods()
    # fork: the workers start at once, without re-importing anything
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    bar = progress_bar(total=len(jobs), desc="verify", unit="file", allowed=progress)
    with ProcessPoolExecutor(max(1, workers), mp_context=ctx, initializer=_init_worker, initargs=(str(dataroot), load_dim)) as pool:
        chunk = max(1, min(64, len(jobs) // (8 * max(1, workers))))
        for job, nbytes, problem in pool.map(_check, jobs, chunksize=chunk):
            report.files[job.kind] += 1
            report.nbytes[job.kind] += nbytes
            if problem is not None:
                report.bad.append(BadFile(job.kind, job.path, problem))
            bar.update(1)
    bar.close()
    report.seconds = time.perf_counter() - t0
    return report


def verify_infos(info_paths: Iterable[str | Path], dataroot: str | Path, *, load_dim: int = 5, workers: int = 2, progress: bool = True) -> VerifyReport:
    """Check every file referenced by the info files at ``info_paths`` (see :func:`verify_files`)."""
    from bevsimdet.data.infos import load_infos

    return verify_files(jobs_of(load_infos(p) for p in info_paths), dataroot, load_dim=load_dim, workers=workers, progress=progress)


def rebuild_hint(dataroot: Path) -> str:
    """The command that restores the files of ``dataroot``: a simulated world is rebuilt by the
    simulator (its options are in ``sim_manifest.json``), nuScenes is re-extracted."""
    if (dataroot / "sim_manifest.json").is_file():
        return f"rebuild with `bevsimdet simulate --out {dataroot} --force` (same options as in {dataroot / 'sim_manifest.json'})"
    return f"re-download / re-extract the nuScenes archives holding them into {dataroot}"


SKIP_HOWTO = "or train/evaluate without them: --set data.skip_bad_samples=true (skips and counts each sample that uses one)"


def print_report(report: VerifyReport, bad_list: Path | None = None, console: Any = None) -> None:
    """The summary table (files, MB and bad files per kind), the speed, the first bad files and
    where the full list is (the fix comes with :func:`run_verify`'s error)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"files of {escape(str(report.dataroot))}")
    for col in ("kind", "files", "MB", "bad"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind in KINDS:
        n_bad = sum(b.kind == kind for b in report.bad)
        table.add_row(kind, str(report.files[kind]), f"{report.nbytes[kind] / 1e6:.1f}", f"[red]{n_bad}" if n_bad else "0")
    console.print(table)
    console.print(f"{report.total} files checked in {report.seconds:.1f} s ({report.total / max(report.seconds, 1e-9):.0f} files/s)")
    if report.ok:
        console.print(f"all {report.total} files are readable")
        return
    for b in report.bad[:SHOWN]:
        console.print(f"bad {b.kind}: {escape(b.path)} {escape(b.problem)}", soft_wrap=True)
    if len(report.bad) > SHOWN:
        console.print(f"... and {len(report.bad) - SHOWN} more")
    if bad_list is not None:
        console.print(f"full list: {escape(str(bad_list))}", soft_wrap=True)


def write_bad_list(report: VerifyReport, path: str | Path) -> Path:
    """One ``kind<TAB>path<TAB>problem`` line per bad file, written atomically."""
    from bevsimdet.io import atomic_write_text

    atomic_write_text(path, "".join(f"{b.kind}\t{b.path}\t{b.problem}\n" for b in report.bad))
    return Path(path)


def run_verify(info_paths: Iterable[str | Path], dataroot: str | Path, info_dir: str | Path, *, workers: int = 2, progress: bool = True) -> VerifyReport:
    """``prepare --verify``: check, print the summary, and raise a one-line :class:`DataError`
    (exit status 2) when any file is bad; the full list goes to ``info_dir/bad_files.txt``."""
    dataroot = Path(dataroot)
    report = verify_infos(info_paths, dataroot, workers=workers, progress=progress)
    bad_list = None
    if not report.ok:
        bad_list = write_bad_list(report, Path(info_dir) / BAD_LIST)
    elif (Path(info_dir) / BAD_LIST).is_file():
        (Path(info_dir) / BAD_LIST).unlink()  # a stale list from an earlier check would mislead
    print_report(report, bad_list)
    if not report.ok:
        raise DataError(f"{len(report.bad)} of {report.total} files under {dataroot} are missing or damaged (listed in {bad_list})", fix=f"{rebuild_hint(dataroot)}, {SKIP_HOWTO}")
    return report


__all__ = ["KINDS", "FileJob", "BadFile", "VerifyReport", "jobs_of", "check_file", "verify_files", "verify_infos", "print_report", "write_bad_list", "run_verify", "rebuild_hint"]
