"""The plan: every step one run needs, as a graph built once, before any work. Both runners walk it.

For a config, methods and seeds the plan holds, in dependency order::

    prepare[<task>]                       one per task: the canonical table and its digest
    embed[<dataset>]                      the ID anchors and the OOD pool (methods that use ODMS negatives only)
    manifold[seed<s>], negatives[seed<s>] one each per training seed and distinct ODMS configuration (an ablation
                                          may add its own): the pool sample, UMAP fit and negatives are drawn
                                          per training seed, so the seeds' spread includes the ODMS draw
    train[<method>/seed<s>/<i>-<stage>]   one per stage, each reading the one before it; a stage that another
                                          registration trains identically is that registration's node (below)
    evaluate[<method>/seed<s>]            reads the last stage and every task
    report                                reads every evaluation, the tasks and every stage (only when asked for)

A node names its step, the method whose config it reads (a method's :meth:`~cdco_core.methods.base.Method.configure`
may change shared sections) and its inputs (other nodes). Two methods that need the same ODMS output share one
node, so nothing is computed twice. The same holds for a training stage of a registration declared to share
another's (:mod:`cdco_core.methods.sharing`): CDCO's ablations that remove a term no stage of the
schedule uses (``cdco_no_poincare`` under the default schedule) train ``cdco``'s stages, and every ablation shares
``cdco``'s task-only warm-up. Such a stage is one node, named by the first method that needs it;
:attr:`Plan.chains` lists each method x seed's stages. The local runner (:mod:`cdco_core.runner`) and the Prefect flow
(``flows/full_pipeline.py``) both execute nodes with :func:`cdco_core.steps.execute`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cdco_core.config import Config, adapter_group_names, check_stage_groups
from cdco_core.data.spec import TaskSpec
from cdco_core.errors import InputError
from cdco_core.io import sha256_json
from cdco_core.odms.corpora import odms_seed


@dataclass
class Node:
    """One step of the plan. ``inputs`` are node ids; ``params`` are small JSON (dataset, seed, stage index)."""

    id: str
    step: str
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "step": self.step, "method": self.method, "params": self.params,
                "inputs": list(self.inputs)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        return cls(d["id"], d["step"], d.get("method"), dict(d.get("params") or {}), list(d.get("inputs") or []))


@dataclass
class Plan:
    """The validated config, each method's effective config, the tasks' specs and the nodes in order."""

    cfg: Config
    configs: dict[str, Config]
    specs: list[TaskSpec]
    nodes: dict[str, Node]
    methods: list[str]
    seeds: list[int]
    chains: dict[tuple[str, int], list[str]] = field(default_factory=dict)  # (method, seed) -> its train node ids

    def config_for(self, node: Node) -> Config:
        return self.configs[node.method] if node.method else self.cfg

    def of_step(self, step: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.step == step]

    def upstream(self, targets: list[str]) -> list[str]:
        """``targets`` and every node they read, in plan order."""
        need: set[str] = set()
        todo = list(targets)
        while todo:
            nid = todo.pop()
            if nid not in need:
                need.add(nid)
                todo += self.nodes[nid].inputs
        return [n for n in self.nodes if n in need]

    def last_stage(self, method: str, seed: int) -> Node:
        return self.nodes[self.chains[(method, seed)][-1]]

    def runs(self) -> list[list[Any]]:
        """``[[method, seed, [train node ids]], ...]``: the chains as JSON, for the report node."""
        return [[m, s, list(ids)] for (m, s), ids in self.chains.items()]


def build_plan(cfg: Config, methods: list[str] | None = None, seeds: list[int] | None = None,
               report: bool = False, split: str = "report", tuned: dict[str, list[str]] | None = None) -> Plan:
    """The plan for ``methods`` x ``seeds`` (default: ``cfg.eval``), with a ``report`` node when asked.

    Args:
        split: what the evaluate nodes score: ``"report"`` (the eval splits) or ``"dev"`` (``cdco tune``'s
            objective: dev splits only; nodes ``evaluate[<method>/seed<s>/dev]``).
        tuned: method -> ``key=value`` overrides (``cdco compare --tuned``), applied to that method's config only.

    Raises:
        InputError: an unknown method, no task of kind ID, an adapter group a method's stage does not define,
            repeated or negative seeds, a tuned method that is not registered: before any work.
        ConfigError: a tuned override the config refuses.
    """
    from cdco_core.data import task_specs
    from cdco_core.methods import METHODS, get_method
    from cdco_core.profile import with_overrides
    from cdco_core.training.trainer import uses_contrastive

    if split not in ("report", "dev"):
        raise InputError(f"split must be report or dev, got {split!r}")
    tuned = dict(tuned or {})
    unknown = sorted(set(tuned) - set(METHODS.names()))
    if unknown:
        raise InputError(f"tuned settings for unknown method(s) {unknown}; registered: {', '.join(METHODS.names())}")
    methods = list(methods if methods is not None else cfg.eval.methods)
    seeds = _check_seeds(list(seeds if seeds is not None else cfg.eval.seeds))
    if not methods:
        raise InputError("no methods to run; give --methods a,b or set eval.methods")
    dup = sorted({m for m in methods if methods.count(m) > 1})
    if dup:
        raise InputError(f"method(s) {dup} given more than once")
    specs = task_specs(cfg.data)
    if not any(s.kind == "ID" for s in specs):
        raise InputError("training needs at least one task of kind ID in data.tasks_file / data.tasks")
    plan = Plan(cfg, {}, specs, {}, methods, seeds)
    for s in specs:
        plan.nodes[f"prepare[{s.name}]"] = Node(f"prepare[{s.name}]", "prepare", params={"task": s.name})
    odms_ids: dict[str, str] = {}  # signature of an ODMS node -> its id, so methods share identical ones
    stage_ids: dict[str, str] = {}  # signature of a training stage -> its id (cdco_core.methods.sharing)
    for name in methods:
        base = with_overrides(cfg, tuned[name], f"tuned settings of {name}") if tuned.get(name) else cfg
        method = get_method(name, base)
        mcfg = method.configure(base)
        plan.configs[name] = mcfg
        stages = method.stages(mcfg)
        check_stage_groups(stages, adapter_group_names(mcfg) | set(method.extra_groups), where=f"{name}: stages")
        contrastive = [uses_contrastive(st) for st in stages]
        needs_odms = method.uses_negatives and any(contrastive) and mcfg.train.n_hard_negatives > 0
        id_tasks = [f"prepare[{s.name}]" for s in specs if s.kind == "ID"]
        ood_tasks = [f"prepare[{s.name}]" for s in specs if s.kind == "OOD"]
        for seed in seeds:
            negatives = _add_odms(plan, name, mcfg, odms_ids, seed) if needs_odms else None
            previous = None
            chain = plan.chains[(name, seed)] = []
            for i, (stage, con) in enumerate(zip(stages, contrastive, strict=True)):
                nid = f"train[{name}/seed{seed}/{i}-{stage.name}]"
                inputs = [*id_tasks, *([previous] if previous else [])]
                if con and negatives:
                    inputs += [negatives, *ood_tasks]
                node = Node(nid, "train", name, {"seed": seed, "stage": i}, inputs)
                sig = _stage_signature(method, mcfg, node)
                if sig is not None and sig in stage_ids:
                    nid = stage_ids[sig]  # another registration trains these bytes: read its node
                else:
                    plan.nodes[nid] = node
                    if sig is not None:
                        stage_ids[sig] = nid
                chain.append(nid)
                previous = nid
            eid = f"evaluate[{name}/seed{seed}]" if split == "report" else f"evaluate[{name}/seed{seed}/dev]"
            params = {"seed": seed} if split == "report" else {"seed": seed, "split": "dev"}
            plan.nodes[eid] = Node(eid, "evaluate", name, params,
                                   [previous, *(f"prepare[{s.name}]" for s in specs)])
    if report:
        evals = [n.id for n in plan.of_step("evaluate")]
        floors = [f"prepare[{s.name}]" for s in specs]  # the majority-class floor per classification task
        trains = [n.id for n in plan.of_step("train")]  # the share of steps each task received
        plan.nodes["report"] = Node("report", "report", params={"methods": methods, "seeds": seeds,
                                                                "runs": plan.runs()},
                                    inputs=evals + floors + trains)
    return plan


def _stage_signature(method: Any, mcfg: Config, node: Node) -> str | None:
    """What decides the bytes of training stage ``node``, or None when its registration shares with no other
    (:mod:`cdco_core.methods.sharing`): the declared family, the method's class and code, the stage's cache section
    without the method's name (settings, model, adapters, training settings, the stage and its place in the
    schedule, the seed) and the inputs, which already name shared nodes."""
    from cdco_core.methods.sharing import stage_family
    from cdco_core.steps.train import method_module, section

    family = stage_family(node.method)
    if family is None:
        return None
    sec = {k: v for k, v in section(mcfg, node).items() if k != "method"}
    cls = f"{type(method).__module__}.{type(method).__qualname__}"
    return sha256_json([family, cls, method_module(node.method), sec, node.inputs])


def _check_seeds(seeds: list[int]) -> list[int]:
    if not seeds or any((not isinstance(x, int)) or x < 0 for x in seeds) or len(set(seeds)) != len(seeds):
        raise InputError(f"seeds must be distinct non-negative integers, at least one; got {seeds}")
    return seeds


def _add_odms(plan: Plan, method: str, mcfg: Config, ids: dict[str, str], seed: int) -> str:
    """Add (or reuse) the embed, manifold and negatives nodes ``method`` needs at training seed ``seed``; returns
    the negatives' id. Embeddings of the anchors (and of an uncapped pool) do not depend on the seed and are shared
    by every seed; a capped pool is a seeded sample, embedded per seed."""
    from cdco_core.odms.corpora import odms_datasets

    anchors, pool = odms_datasets(mcfg, plan.specs)
    embeds = []
    for name in anchors + pool:
        role = "anchor" if name in anchors else "pool"
        params = {"dataset": name, "role": role}
        per_seed = role == "pool" and mcfg.embed.pool_max_rows is not None
        if per_seed:
            params["seed"] = seed
        embeds.append(_shared(plan, ids, "embed", name, method, params, [f"prepare[{name}]"],
                              sig=("embed", name, role, _embed_sig(mcfg, role, seed)),
                              suffix=f"seed{seed}" if per_seed else None))
    manifold = _shared(plan, ids, "manifold", None, method, {"seed": seed}, embeds,
                       sig=("manifold", tuple(embeds), mcfg.manifold.model_dump_json(), seed), suffix=f"seed{seed}")
    return _shared(plan, ids, "negatives", None, method, {"seed": seed}, [manifold, *embeds],
                   sig=("negatives", manifold, mcfg.negatives.model_dump_json(), mcfg.seed, seed), suffix=f"seed{seed}")


def _embed_sig(cfg: Config, role: str, seed: int) -> str:
    capped = role == "pool" and cfg.embed.pool_max_rows is not None
    pool = {"cap": cfg.embed.pool_max_rows, "seed": odms_seed(cfg.seed, seed)} if capped else {}
    return sha256_json([cfg.model.model_dump(mode="json"), cfg.embed.model_dump(mode="json"), pool])


def _shared(plan: Plan, ids: dict[str, str], step: str, dataset: str | None, method: str, params: dict[str, Any],
            inputs: list[str], sig: tuple, suffix: str | None = None) -> str:
    """The id of an ODMS node with this signature, adding it if new. Named ``step[dataset/suffix]`` (parts left
    out when None); if another configuration already holds that name, the first method needing this one is added
    (``negatives[seed0/cdco_random_negatives]``)."""
    key = sha256_json(list(sig))
    if key in ids:
        return ids[key]
    parts = [p for p in (dataset, suffix) if p]
    base = f"{step}[{'/'.join(parts)}]" if parts else step
    nid = base if base not in plan.nodes else f"{step}[{'/'.join([*parts, method])}]"
    plan.nodes[nid] = Node(nid, step, method, params, inputs)
    ids[key] = nid
    return nid
