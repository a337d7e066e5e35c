"""The human summary ``cdco run`` and ``cdco compare`` print at the end (the full JSON is behind ``--json``)."""

from __future__ import annotations

from typing import Any


def table(rows: list[dict[str, Any]], first: str = "method") -> list[str]:
    """A plain-text table, columns aligned; ``rows`` are dicts with the same keys (``first`` leftmost)."""
    if not rows:
        return ["(no results)"]
    cols = [first] + [k for k in rows[0] if k != first]
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) if i == 0 else v.rjust(w)  # noqa: E731
                                  for i, (v, w) in enumerate(zip(vals, widths, strict=True))).rstrip()
    return [line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "-" if v is None else str(v)


def kind_columns(row: dict[str, Any]) -> list[str]:
    """The per-kind columns of a comparison row (ID, OOD, KI, overall...); per-task ones read ``task (metric)``."""
    return [k for k in row if k != "method" and " (" not in k]


def run_summary(result: dict[str, Any], wall_s: float) -> str:
    """``cdco run``: the results per method and kind, wall time, the report, the model, where to look in MLflow."""
    steps = result.get("steps") or {}
    computed = sum(1 for s in steps.values() if not s.get("cached"))
    averages = result.get("averages") or {}
    rows = [{"method": m, **kinds} for m, kinds in averages.items()]
    if rows:  # one column set for every method, overall last
        cols = list(dict.fromkeys(k for r in rows for k in r if k != "method"))
        cols = [c for c in cols if c != "overall"] + (["overall"] if "overall" in cols else [])
        rows = [{"method": r["method"], **{c: r.get(c) for c in cols}} for r in rows]
    lines = [f"cdco run: profile {result.get('profile')}, {len(steps)} steps ({computed} computed, "
             f"{len(steps) - computed} from cache), {wall_s:.1f} s", "", *table(rows), ""]
    report = result.get("report") or {}
    if report.get("md"):
        lines.append(f"report      {report['md']}")
    reg = result.get("registered")
    if reg:
        aliases = " ".join(f"@{a}" for a in reg.get("aliases") or [])
        lines.append(f"registered  {reg['name']} version {reg['version']} {aliases} "
                     f"({'unchanged' if reg.get('reused') else 'new'}, weights {reg['weights_sha256'][:12]})")
        if reg.get("champion"):
            c = reg["champion"]
            lines.append(f"champion    {c['method']} seed {c['seed']}: {reg['name']} version {c['version']} @champion")
    lines.append(_mlflow_line(result))
    return "\n".join(lines)


def compare_summary(result: dict[str, Any], wall_s: float) -> str:
    """``cdco compare``: the comparison table per kind (mean ± sd over seeds), wall time, the files."""
    rows = result.get("table") or []
    rows = [{"method": r.get("method"), **{c: r[c] for c in kind_columns(r)}} for r in rows]
    seeds = result.get("seeds") or []
    lines = [f"cdco compare: {len(result.get('methods') or [])} method(s) x {len(seeds)} seed(s) "
             f"{list(seeds)}, {wall_s:.1f} s; cells: mean ± sd over seeds", "", *table(rows), ""]
    for key, label in (("md", "report"), ("csv", "table")):
        if result.get(key):
            lines.append(f"{label:<11} {result[key]}")
    if result.get("plots"):
        lines.append(f"{'plots':<11} {', '.join(result['plots'])}")
    lines += [f"{'warning':<11} {w}" for w in result.get("warnings") or []]  # heads at the majority-class floor
    lines += [f"{'one model':<11} {' = '.join(g)}: the same weights at every seed, their scores do not differ"
              for g in result.get("same_weights") or []]
    if result.get("mlflow_run_id"):
        lines.append(_mlflow_line(result))
    return "\n".join(lines)


def _mlflow_line(result: dict[str, Any]) -> str:
    if result.get("mlflow_url"):
        return f"MLflow      {result['mlflow_url']}"
    if result.get("mlflow_ui"):
        return f"MLflow      {result['mlflow_ui']}   then open {result.get('mlflow_page') or 'http://127.0.0.1:5000'}"
    return f"MLflow      run {result.get('mlflow_run_id')}"
