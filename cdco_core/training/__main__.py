"""``python -m cdco_core.training --profile smoke --method cdco --seed 0 [--set key=value ...]``.

Runs (or resumes) every stage and prints the result as JSON. Re-running after an interruption (even
``kill -9``) resumes each unfinished stage from its latest checkpoint.

Data parallel (see :mod:`cdco_core.training.distributed`): the same command under a launcher, e.g.

    torchrun --nproc-per-node 2 -m cdco_core.training --profile smoke                  # CPU, gloo
    accelerate launch --multi_gpu --num_processes 4 -m cdco_core.training --profile demo  # GPUs, NCCL
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdco_core.training", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--method", default=None, help="registry name; default: the config's eval.methods[0]")
    parser.add_argument("--seed", type=int, default=None, help="default: the config's seed")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="override key.sub=value")
    args = parser.parse_args(argv)

    from cdco_core.errors import InputError
    from cdco_core.plan import build_plan
    from cdco_core.profile import load_profile
    from cdco_core.runner import run_plan
    from cdco_core.training import distributed

    d = distributed.setup()  # before any model is built: on GPUs it picks this rank's device
    try:
        cfg = load_profile(args.profile, args.sets)
        distributed.check_batch(cfg.train.batch_size, d)
        method = args.method or cfg.eval.methods[0]
        plan = build_plan(cfg, [method], [cfg.seed if args.seed is None else args.seed])
        targets = [n.id for n in plan.of_step("train")]
        records = run_plan(plan, targets)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if d.main:
        print(json.dumps({t: records[t].as_dict() for t in targets}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
