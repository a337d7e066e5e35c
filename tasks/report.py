"""MLflow lineage of the ``report`` node: the evaluations in; the comparison CSV/Markdown, the bootstrap table, the
results JSON and the plots out, uploaded once per content.

``comparison.md`` links its plots by file name, which a browser resolves against the MLflow UI's own address (a
broken image). The copy logged for the UI (``comparison/comparison.md``, and the run's description) links them
through the tracking server's artifact route instead; the file as written on disk is left as it is. MLflow's
artifact viewer shows only images with an absolute http(s) address, so against a tracking server the links carry
its address; a local SQLite store has no server address, and there the plots show in the run's description (the
relative route works in the UI, whichever port ``mlflow ui`` uses).
"""

from __future__ import annotations

import re
import urllib.parse

from tasks.lineage import Lineage

ARTIFACT_DIR = "comparison"
REPORT_FILES = ("bootstrap.csv", "results.json")


def ui_markdown(md: str, run_id: str, folder: str = ARTIFACT_DIR, server: str | None = None) -> str:
    """``md`` with relative image links (``![x](kinds.png)``) pointing at the run's artifacts on the server
    (``server``: its address, for an absolute link; None: relative to the UI's root)."""
    def link(m: re.Match[str]) -> str:
        target = m.group(2)
        if "://" in target or target.startswith(("/", "#")) or "get-artifact?" in target:
            return m.group(0)
        q = urllib.parse.urlencode({"path": f"{folder}/{target}", "run_uuid": run_id})
        route = f"{server.rstrip('/')}/get-artifact" if server else "get-artifact"
        return f"![{m.group(1)}]({route}?{q})"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", link, md)


def log_report(lin: Lineage, node_id: str = "report") -> None:
    import mlflow

    from tasks import lineage, tracking

    r = lin.records[node_id]
    o = r.outputs
    with lineage.step_run(lin, [node_id], "report") as run_id:
        inputs = lineage.log_upstream(lin, node_id, contexts=lambda rec, split: "evaluation")
        md_path = r.path(o["md"])
        files = [r.path(o["csv"]), *(r.path(f) for f in REPORT_FILES), *(r.path(p) for p in o.get("plots", []))]

        uri = tracking.tracking_uri()
        server = uri if uri.startswith(("http://", "https://")) else None

        def upload() -> None:
            tracking.log_paths([f for f in files if f.exists()], ARTIFACT_DIR)
            mlflow.log_text(ui_markdown(md_path.read_text(encoding="utf-8"), run_id, server=server),
                            f"{ARTIFACT_DIR}/{o['md']}")

        held = lineage.upload_once(lin, run_id, r.key, upload)
        mlflow.log_param("methods", ",".join(o.get("methods", [])))
        warnings = o.get("warnings") or []  # trained heads at or below their task's majority-class floor
        mlflow.set_tag("cdco.floor_warnings", "\n".join(warnings)[:4000] if warnings else "none")
        outs = [lineage.output_row(lin, node_id, f.name, r.files.get(f.name, ""), f"artifact `{ARTIFACT_DIR}/{f.name}`")
                for f in [md_path, *files] if f.name in r.files]
        report_md = ui_markdown(md_path.read_text(encoding="utf-8"), held)
        lineage.describe("report: the comparison of every evaluated method and seed", inputs, outs,
                         ["---", "", report_md], digest=r.digest)
