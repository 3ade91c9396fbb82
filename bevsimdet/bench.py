"""``bevsimdet bench``: run every area's benchmark and rewrite ``docs/benchmarks.md``.

Each ``benchmarks/bench_<area>.py`` exposes ``run(quick: bool) -> dict`` returning
``{"title": str, "rows": [dict, ...], "notes": [str, ...]}``; figures are medians of several runs.
This module only collects them and writes the report (machine, versions, tables).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import time
from pathlib import Path

import typer

from bevsimdet.errors import UserError

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "benchmarks"


def discover(bench_dir: Path = BENCH_DIR) -> list[Path]:
    if not bench_dir.is_dir():
        raise UserError(f"benchmarks folder not found: {bench_dir}", fix="run `bevsimdet bench` from a source checkout")
    return sorted(bench_dir.glob("bench_*.py"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def machine_info() -> dict[str, str]:
    import numpy
    import torch

    info = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "torch threads": str(torch.get_num_threads()),
    }
    try:
        import nuscenes  # noqa: F401
        from importlib.metadata import version

        info["nuscenes-devkit"] = version("nuscenes-devkit")
    except Exception:  # the report must still be written without the devkit
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _as_rows(res: dict) -> list[dict]:
    """A benchmark that returned a flat dict of figures is shown as a two-column table."""
    flat = {k: v for k, v in res.items() if k not in ("title", "notes", "rows") and not isinstance(v, (dict, list))}
    return [{"figure": k, "value": v} for k, v in flat.items()]


def render_markdown(results: list[tuple[str, dict]], info: dict[str, str], extra: str = "") -> str:
    lines = ["# Benchmarks", "", "Written by `bevsimdet bench` (`make bench`); do not edit by hand above the line", "`<!-- manual -->`.", ""]
    lines += ["## Machine", ""] + [f"- {k}: {v}" for k, v in info.items()] + [""]
    for name, res in results:
        lines += [f"## {res.get('title', name)}", ""]
        rows = res.get("rows") or _as_rows(res)
        if rows:
            cols = list(dict.fromkeys(k for r in rows for k in r))
            lines.append("| " + " | ".join(cols) + " |")
            lines.append("|" + "---|" * len(cols))
            for r in rows:
                lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
            lines.append("")
        for note in res.get("notes", []):
            lines.append(f"- {note}")
        lines.append("")
    if extra:
        lines += ["<!-- manual -->", extra.strip(), ""]
    return "\n".join(lines)


def run_all(quick: bool, only: list[str] | None = None, out: Path | None = None) -> Path:
    from rich.console import Console

    from bevsimdet.io import atomic_write_text

    console = Console(stderr=True)
    out = out or REPO / "docs" / "benchmarks.md"
    results = []
    for path in discover():
        area = path.stem.removeprefix("bench_")
        if only and area not in only:
            continue
        console.print(f"[bold]bench[/bold] {area} ...")
        t0 = time.perf_counter()
        res = load(path).run(quick=quick)
        console.print(f"  done in {time.perf_counter() - t0:.1f} s")
        results.append((area, res))
    extra = ""
    if out.exists():
        text = out.read_text()
        if "<!-- manual -->" in text:
            extra = text.split("<!-- manual -->", 1)[1]
    atomic_write_text(out, render_markdown(results, machine_info(), extra))
    return out


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        quick: bool = typer.Option(False, "--quick", help="Smaller inputs and fewer repeats (minutes, not tens of minutes)."),
        only: list[str] = typer.Option(None, "--only", help="Run only these areas (e.g. --only eval --only models)."),
        out: Path = typer.Option(None, "--out", help="Report path (default docs/benchmarks.md)."),
    ) -> None:
        """Run all benchmarks (sim, data, eval, models, export, ...) and rewrite docs/benchmarks.md."""
        path = run_all(quick=quick, only=only or None, out=out)
        typer.echo(f"wrote {path}")
