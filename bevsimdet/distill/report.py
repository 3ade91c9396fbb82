"""Read the gradient shares a distillation run logged, as a table.

``bevsimdet distill-terms RUN`` (or ``python -m bevsimdet.distill.report RUN``, RUN being a run
directory or its ``log.jsonl``) prints, for every weighted loss term of the ``distill`` rows
(written every ``distill.grad_log_interval`` steps): its share of the summed gradient norms (mean
over the rows, first row, last row), its gradient norm and weighted value, and, for terms whose
normaliser is not the released code's, the conversion factor and the weight under the configured
normaliser that the released weight amounts to on this run's data (docs/distill.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from bevsimdet.distill.criterion import RELEASED_WEIGHTS
from bevsimdet.engine.runlog import read_log
from bevsimdet.errors import UserError

KIND = "distill"


def load_shares(path: str | Path) -> list[dict[str, Any]]:
    """The ``distill`` rows of a run's ``log.jsonl`` (``path``: the run directory or the file)."""
    rows = read_log(path, KIND)
    if not rows:
        raise UserError(
            f"{path} has no '{KIND}' rows (gradient shares)",
            fix="distil with distill.grad_log_interval > 0 (e.g. --set distill.grad_log_interval=50)",
        )
    return rows


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "" if v is None else format(v, spec)


def render_shares(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the gradient shares in ``rows``, largest mean share first."""
    terms = sorted({k.split("/", 1)[1] for r in rows for k in r if k.startswith("grad_share/")})

    def series(prefix: str, term: str) -> list[float]:
        return [float(r[f"{prefix}/{term}"]) for r in rows if f"{prefix}/{term}" in r]

    table = []
    for term in terms:
        shares = series("grad_share", term)
        factor = _mean(series("released_factor", term))
        released = RELEASED_WEIGHTS.get(term)
        table.append((
            _mean(shares) or 0.0,
            f"| {term} | {_fmt(_mean(shares), '.3f')} | {_fmt(shares[0], '.3f')} | {_fmt(shares[-1], '.3f')} | "
            f"{_fmt(_mean(series('grad_norm', term)))} | {_fmt(_mean(series('loss', term)))} | {_fmt(factor)} | "
            f"{_fmt(released * factor if factor is not None and released is not None else None)} |",
        ))
    steps = [int(r["step"]) for r in rows]
    total = _mean([float(r["grad_norm/total"]) for r in rows if "grad_norm/total" in r])
    lines = [
        f"Gradient shares of the weighted loss terms on the student ({len(rows)} rows, steps {min(steps)}-{max(steps)}):",
        "",
        "| term | share (mean) | first | last | grad norm (mean) | weighted value (mean) | released factor | released weight here |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *[line for _, line in sorted(table, key=lambda x: -x[0])],
        "",
        f"Norm of the summed gradient (mean): {_fmt(total)}. Share = a term's gradient norm / the sum over terms.",
        "Released factor: the term under the released normaliser / the term as configured; released weight here: the",
        "released code's weight x that factor, i.e. the weight that would reproduce the released strength on this data.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m bevsimdet.distill.report RUN_DIR_OR_LOG_JSONL", file=sys.stderr)
        return 2
    try:
        print(render_shares(load_shares(args[0])))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["load_shares", "render_shares", "main", "KIND"]
