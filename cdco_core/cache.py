"""The one step cache: one key per step, one folder per key, every record verified before it is trusted.

A step's key is computed by :func:`step_key` from exactly three things:

    key = sha256(step name, {input name: input digest}, the validated config JSON the step reads, code digest)

The code digest (:func:`code_digest`) is a sha256 of the code of every ``cdco_core`` module the step's module
imports, directly or not (its import closure, read from the source with ``ast``: nothing is kept by hand). Editing
one line of ``losses.py`` changes the training steps' keys and leaves the embedding step's key alone. What is
hashed is each module's syntax tree without docstrings and positions (:func:`code_text`), so a comment, a
docstring, blank lines or a re-wrapped call change no key, and every edit that can change what runs does. The Prefect
tasks use the same key (``tasks/_cache.py``), so Prefect's cache and this one can never disagree.

On disk, under ``CDCO_HOME/steps/<step>/``::

    <label>-<key[:16]>/            the published output: the step's files and record.json
        outputs.json               the step's small JSON result (metrics, counts), hashed like every other file
        record.json                {"step", "key", "label", "files": {name: sha256}}, written last
    <label>-<key[:16]>.partial/    resume state while the step runs (embedding shards, training checkpoints)
    .locks/<label>-<key[:16]>      held while the step computes or publishes (two processes never both do)

A record is trusted only if it parses, names this key, and every file it lists still has its sha256: any other
state is a cache miss and the step runs again. Every number a report shows comes from such a file.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdco_core.io import atomic_dir, file_lock, sha256_file, sha256_json
from cdco_core.paths import cdco_home

# The package whose sources make up code digests; a test points it at an edited copy.
SOURCE_ROOT = Path(__file__).resolve().parent
PACKAGE = "cdco_core"
# Packages that import every one of their plugins (the method registry, the step table). Their imports of their
# own sub-packages are not followed: a method's edit does not invalidate the other methods' steps, and one step's
# edit not the others'. A step that builds a method adds that method's package to its code itself.
PLUGIN_PACKAGES = ("cdco_core.methods", "cdco_core.steps")
RECORD = "record.json"
OUTPUTS = "outputs.json"


# ------------------------------------------------------------------------------------------- code digest
def module_file(module: str, root: Path | None = None) -> Path | None:
    """The source file of ``cdco_core.x.y`` under ``root`` (a package's ``__init__.py``), or None."""
    root = root or SOURCE_ROOT
    parts = module.split(".")[1:]
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, root: Path | None = None, module_level_only: bool = False) -> set[str]:
    """``cdco_core`` modules that ``module`` imports (inside functions too, unless ``module_level_only``;
    never those under ``if TYPE_CHECKING:``, which run only for type checkers)."""
    path = module_file(module, root)
    if path is None:
        return set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    here = module if is_pkg else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub, top)
                continue
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                if not module_level_only:
                    visit(child, False)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = here.split(".")[: len(here.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                found.add(base)
                found.update(f"{base}.{a.name}" for a in child.names)  # `from pkg import submodule`
            else:
                visit(child, top)

    visit(tree, True)
    found.discard(module)  # `from pkg import sub` inside pkg/__init__.py names the package itself
    return {m for m in found if m.split(".")[0] == PACKAGE and module_file(m, root) is not None}


def import_closure(module: str, root: Path | None = None) -> list[str]:
    """``module`` and every ``cdco_core`` module it imports, transitively, with the packages they sit in.

    A :data:`PLUGIN_PACKAGES` package's imports of its own sub-packages are not followed (see there).
    """
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen or module_file(m, root) is None:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        for dep in imports_of(m, root):
            if m in PLUGIN_PACKAGES and dep.startswith(m + "."):
                continue
            todo.append(dep)
    return sorted(seen)


def code_digest(*modules: str) -> str:
    """sha256 of the sources of the union of the modules' import closures (see the module docstring)."""
    return _code_digest(tuple(sorted(set(modules))), SOURCE_ROOT)


@functools.lru_cache(maxsize=256)
def _code_digest(modules: tuple[str, ...], root: Path) -> str:
    closure = sorted({m for mod in modules for m in import_closure(mod, root)})
    h = hashlib.sha256()
    for m in closure:
        h.update(m.encode() + b"\0")
        h.update(code_text(module_file(m, root).read_bytes()).encode())  # type: ignore[union-attr]
    return h.hexdigest()


def code_text(source: bytes | str) -> str:
    """What of a module's source enters a code digest: its syntax tree, without docstrings and positions.

    Comments and layout never reach the tree; docstrings (a string literal opening a module, class or function)
    are dropped here, and so are line and column numbers. Everything else, every name, literal, default and
    decorator, is kept, so any edit that can change what the code computes changes the text. The dump's format
    is the interpreter's: another Python version gives other keys (a safe miss, not a stale hit).
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


# ---------------------------------------------------------------------------------------------- the key
def step_key(step: str, inputs: dict[str, str], config: Any, code: str) -> str:
    """The one cache key of a step: its name, its inputs' digests, the config it reads, its code digest."""
    return sha256_json({"step": step, "inputs": dict(sorted(inputs.items())), "config": config, "code": code})


# --------------------------------------------------------------------------------------------- records
@dataclass
class Record:
    """What a step returns and what its consumers receive: small, JSON-able, content-addressed.

    ``digest`` is what downstream keys read: the sha256 of the output files' digests (for ``prepare``, the
    task's content digest).
    """

    step: str
    label: str
    key: str
    dir: str
    outputs: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    digest: str = ""
    cached: bool = False

    def path(self, name: str) -> Path:
        return Path(self.dir) / name

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "label": self.label, "key": self.key, "dir": self.dir, "outputs": self.outputs,
                "files": self.files, "digest": self.digest, "cached": self.cached}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        return cls(**{k: d[k] for k in ("step", "label", "key", "dir", "outputs", "files", "digest", "cached")})


# Files a step writes about how it ran (timings, which shards a resumed run recomputed) rather than what it
# produced: verified like every file, left out of the digest downstream keys read, so an identical output
# recomputed on another day or resumed after a kill leaves everything after it cached.
RUN_FILES = (OUTPUTS, "timings.json")


def files_digest(files: dict[str, str]) -> str:
    """The output's content digest: the sha256 of its files' sha256s, run notes (:data:`RUN_FILES`) excluded."""
    return sha256_json(dict(sorted((k, v) for k, v in files.items() if k not in RUN_FILES)))


def step_dir(step: str, label: str, key: str) -> Path:
    """The folder named by ``key`` (the label is for people browsing ``CDCO_HOME``)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in label)
    return cdco_home() / "steps" / step / f"{safe}-{key[:16]}"


def read_record(out: Path, key: str) -> Record | None:
    """The verified record in ``out``, or None (missing, unparsable, another key, or a file that changed)."""
    try:
        raw = json.loads((out / RECORD).read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("key") != key or not isinstance(raw.get("files"), dict):
            return None
        for name, sha in raw["files"].items():
            if sha256_file(out / name) != sha:
                return None
        outputs = json.loads((out / OUTPUTS).read_text(encoding="utf-8")) if OUTPUTS in raw["files"] else None
        if not isinstance(outputs, dict):
            return None
        return Record(step=raw["step"], label=raw["label"], key=key, dir=str(out), outputs=outputs,
                      files=raw["files"], digest=files_digest(raw["files"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def step_lock(out: Path) -> contextlib.AbstractContextManager[None]:
    """Exclusive lock on one step output across processes (``fcntl.flock``; released if the holder dies)."""
    return file_lock(out.parent / ".locks" / out.name)


Compute = Callable[[Path, Path], dict[str, Any]]


def run_cached(step: str, label: str, key: str, compute: Compute, collective: bool = False) -> Record:
    """Return the verified output of ``key``, computing it first when there is none.

    ``compute(out, scratch)`` writes the step's files into ``out`` (a fresh folder, published atomically with the
    record) and may keep resume state in ``scratch`` (kept across a kill, deleted once published). It returns
    the small JSON outputs. The whole compute-and-publish runs under :func:`step_lock`.

    Under a distributed launcher (``torch.distributed`` initialised, several ranks walking the same plan), rank 0
    alone decides whether the output exists and publishes it. A ``collective`` step (training with DDP) computes
    on every rank; any other step computes on rank 0 while the others wait, then read what it published.
    """
    rank, world = _rank_world()
    if world > 1:
        return _run_distributed(step, label, key, compute, collective, rank)
    return run_cached_local(step, label, key, compute)


def run_cached_local(step: str, label: str, key: str, compute: Compute, keep_scratch: bool = False) -> Record:
    """:func:`run_cached` in one process (``keep_scratch``: leave the resume state for the caller to delete)."""
    out = step_dir(step, label, key)
    done = read_record(out, key)
    if done is not None:
        return done
    with step_lock(out):
        done = read_record(out, key)  # another process may have published it while we waited
        if done is not None:
            return done
        scratch = out.with_name(out.name + ".partial")
        scratch.mkdir(parents=True, exist_ok=True)
        if out.exists():
            shutil.rmtree(out)  # a folder whose record does not verify: rebuilt, never trusted
        with atomic_dir(out) as tmp:
            outputs = json.loads(json.dumps(compute(tmp, scratch), default=_json_default))  # plain JSON types
            (tmp / OUTPUTS).write_text(json.dumps(outputs, indent=2, sort_keys=True), encoding="utf-8")
            files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            record = {"step": step, "label": label, "key": key, "files": files}
            (tmp / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return Record(step=step, label=label, key=key, dir=str(out), outputs=outputs, files=files,
                  digest=files_digest(files), cached=False)


def _rank_world() -> tuple[int, int]:
    """(rank, world size) of an initialised ``torch.distributed`` group, else (0, 1); torch is not imported here
    unless a launcher set ``WORLD_SIZE``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _run_distributed(step: str, label: str, key: str, compute: Compute, collective: bool, rank: int) -> Record:
    import tempfile

    import torch.distributed as dist

    out = step_dir(step, label, key)
    flag = [read_record(out, key) is not None if rank == 0 else None]
    dist.broadcast_object_list(flag, src=0)  # every rank takes the same branch
    if flag[0]:
        dist.barrier()
        return read_record(out, key)  # type: ignore[return-value]
    if rank == 0:
        record = run_cached_local(step, label, key, compute, keep_scratch=True)
        dist.barrier()  # the others finished computing (collective) or waited
        shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
        return record
    if collective:  # every rank trains; this one's files are not published
        scratch = out.with_name(out.name + ".partial")
        with tempfile.TemporaryDirectory() as tmp:
            compute(Path(tmp), scratch)
    dist.barrier()
    record = read_record(out, key)
    if record is None:
        raise RuntimeError(f"rank {rank}: rank 0 did not publish {step} {label}")  # internal invariant
    return record


def _json_default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
