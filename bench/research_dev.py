"""Dev-split runs for the CDCO research (issue 14): train a method at full length and score it on the dev splits.

Every decision of the research is taken on these numbers (the held-out splits are scored once, by
``cdco compare``). A run goes through the plan and the step cache like any other, so the training stages are
shared with the benchmark when the method and settings are the same, and a cut run resumes. One JSON file per
(method, settings, seed) under ``--out``: the dev evaluation's averages and per-entry metrics.

    CDCO_HOME=... python bench/research_dev.py --profile benchmark-cpu --method cdco_r --name flat \
        --set method_settings.cdco_r.schedule=flat --seed 0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="benchmark-cpu")
    ap.add_argument("--method", required=True)
    ap.add_argument("--name", required=True, help="a short name for these settings (the output file's stem)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="override key=value (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/research/dev"))
    args = ap.parse_args()

    from cdco_core.profile import load_profile
    from cdco_core.tuning import dev_score

    cfg = load_profile(args.profile)
    start = time.time()
    primary, outputs = dev_score(cfg, args.method, args.sets, seed=args.seed, steps_fraction=1.0)
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {"commit": commit, "method": args.method, "name": args.name, "overrides": args.sets, "seed": args.seed,
              "profile": args.profile, "primary_dev": primary, "averages": outputs.get("averages"),
              "metrics": outputs.get("metrics"), "wall_s": round(time.time() - start, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.method}-{args.name}-seed{args.seed}.json"
    path.write_text(json.dumps(result, indent=1, sort_keys=True), encoding="utf-8")
    print(json.dumps({"file": str(path), "primary_dev": primary, "averages": outputs.get("averages")}))


if __name__ == "__main__":
    main()
