"""Equal-budget tuning (``cdco tune``): a seeded Optuna TPE study per (profile, method), resumable, as overrides.

- **Search spaces** are declared per method in :data:`SEARCH_SPACES`: config key path -> distribution. Keys are the
  ones ``--set`` takes (``train.stages.0.lr``, ``train.head_lr``, ``method_settings.ca_mtl.encoder_lr_scale``);
  every entry is checked against the profile before any trial (:func:`check_search_space`): a key the config does
  not have, or a value it refuses, is a :class:`~cdco_core.errors.ConfigError`.
- **Objective**: the caller's ``score(overrides) -> float`` (higher is better); ``cdco tune`` wires it to
  :func:`dev_score`: the method trained with every stage shortened to ``steps_fraction`` of its steps, scored on the
  dev splits only (the ID tasks' dev split, the seen OOD domains' validation split; never a reported split), the
  objective being the dev analogue of the primary endpoint (``averages["primary"]`` of the dev evaluation: the mean
  of the ID dev average and the seen-domain probe at the smallest budget). Each trial's overrides are stored as its
  user attribute ``overrides``.
- **Storage**: ``sqlite:///$CDCO_HOME/tuning/optuna.db`` by default, or any Optuna storage URL (the team's
  PostgreSQL), so several workers can fill one study. Study name ``<profile>/<method>``; ``load_if_exists``.
- **Several workers** (processes or machines on one storage) fill one study: a worker stops asking once the
  complete and running trials reach ``n_trials``, and the sampler's seed includes the running count, so workers
  that ask at once propose different settings. Two asks at the same instant can still overshoot by one trial.
- **Resumable and reproducible**: a study runs until it holds ``n_trials`` complete trials. Before each trial the TPE
  sampler is re-seeded with ``(seed, number of complete trials)``, so the k-th complete trial's settings depend only
  on the seed and the trials completed before it: a study killed mid-trial and resumed proposes what an
  uninterrupted one would. A trial left ``RUNNING`` by a process of this host that no longer exists is marked failed
  on resume (its pid and host are recorded when it starts).
- **Output**: :func:`write_best` writes ``{method: [key=value, ...]}`` as YAML, the file ``cdco compare --tuned``
  reads; :func:`read_tuned` reads it back, refusing unknown methods.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cdco_core.config import Config
from cdco_core.errors import ConfigError, InputError
from cdco_core.paths import cdco_home


# ------------------------------------------------------------------------------------ distributions
@dataclass(frozen=True)
class Float:
    """A real value in [low, high]; ``log`` samples on a log scale (learning rates, temperatures)."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Int:
    low: int
    high: int


@dataclass(frozen=True)
class Choice:
    choices: tuple[Any, ...]


Distribution = Float | Int | Choice

# Shared by every method with adapters or fine-tuned weights: the training lr and the heads' own lr.
_LR = {"train.stages.0.lr": Float(1e-4, 3e-3, log=True), "train.head_lr": Float(1e-3, 1e-1, log=True)}

# method -> {config key path: distribution}. Every method gets the same number of trials (cdco tune --trials N).
SEARCH_SPACES: dict[str, dict[str, Distribution]] = {
    "cdco": {
        **_LR,
        "train.stages.1.lr": Float(1e-4, 3e-3, log=True),
        "train.stages.2.lr": Float(1e-4, 3e-3, log=True),
        "train.contrastive_temperature": Float(0.03, 0.3, log=True),
        "train.stages.1.losses.euclidean": Float(0.1, 1.0),
        "train.stages.3.losses.euclidean": Float(0.05, 0.5),  # the consolidation stage's contrastive weight
    },
    "lora_mtl": {**_LR, "adapters.r": Choice((4, 8, 16)), "adapters.dropout": Float(0.0, 0.2)},
    "bottleneck_mtl": {**_LR, "adapters.reduction_factor": Choice((8, 16, 32))},
    "lora_single": {**_LR, "adapters.r": Choice((4, 8, 16)), "adapters.dropout": Float(0.0, 0.2)},
    "frozen": {"train.head_lr": Float(1e-3, 1e-1, log=True)},  # its heads are all it trains, at train.head_lr
    "full_ft": dict(_LR),
    "top_half_ft": dict(_LR),
    "ca_mtl": {
        **_LR,
        "method_settings.ca_mtl.encoder_lr_scale": Float(0.03, 0.3, log=True),
        "method_settings.ca_mtl.task_embedding_dim": Choice((32, 64, 128)),
        "method_settings.ca_mtl.attention_block_size": Choice((8, 16, 32)),
    },
    "ego_plm": {
        **_LR,
        "method_settings.ego_plm.pretext_weight": Float(0.01, 1.0, log=True),
        "method_settings.ego_plm.consistency_weight": Float(0.1, 3.0, log=True),
        # >= step_size / 2 (0.05), as its config requires
        "method_settings.ego_plm.epsilon": Float(0.03, 0.5, log=True),
    },
}


def _settings_class(name: str) -> Any:
    """The settings class method ``name`` registered (None: it has none, or no such method)."""
    from cdco_core.methods import METHODS

    return METHODS.entry(name).config_cls if name in METHODS else None


def _has_path(raw: Any, path: list[str]) -> bool:
    node = raw
    for key in path:
        if isinstance(node, list):
            if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
                return False
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return False
    return True


def _example_value(dist: Distribution) -> Any:
    if isinstance(dist, Choice):
        return dist.choices[0]
    return dist.low


def _format(key: str, value: Any) -> str:
    """``key=value`` that ``--set`` parses back to the same value (floats keep a dot: YAML reads 1e-05 as a string)."""
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        if e and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"
        return f"{key}={text}"
    return f"{key}={json.dumps(value)}"


def check_search_space(cfg: Config, method: str, space: dict[str, Distribution] | None = None) -> None:
    """Refuse a search space that names a key the config does not have, or a value it refuses, before any trial.

    A key must already exist in the profile's validated config (a ``method_settings.<name>.<key>`` must be a setting
    of that method); then the space's extreme values are applied as overrides and the config validated again.

    Raises:
        ConfigError: names the method, the key and what is wrong.
        InputError: a method without a declared search space.
    """
    if space is None:
        if method not in SEARCH_SPACES:
            raise InputError(f"no search space for method {method!r}; declared: {', '.join(sorted(SEARCH_SPACES))}")
        space = SEARCH_SPACES[method]
    raw = cfg.model_dump(mode="json")
    for key, dist in space.items():
        path = key.split(".")
        settings_cls = _settings_class(path[1]) if len(path) == 3 and path[0] == "method_settings" else None
        if settings_cls is not None:
            allowed = settings_cls.model_fields
            if path[2] not in allowed:
                raise ConfigError(f"search space of {method!r}: {key} is not a setting of method_settings.{path[1]}; "
                                  f"allowed: {', '.join(sorted(allowed))}")
        elif not _has_path(raw, path):
            raise ConfigError(f"search space of {method!r}: the config has no key {key} (profile {cfg.profile!r})")
        values = dist.choices if isinstance(dist, Choice) else (dist.low, dist.high)
        for value in values:
            _validated(cfg, [_format(key, value)], f"search space of {method!r}")


def _validated(cfg: Config, overrides: list[str], where: str) -> Config:
    from cdco_core.profile import with_overrides

    return with_overrides(cfg, overrides, where)


# ------------------------------------------------------------------------------------------ studies
def default_storage() -> str:
    """``$CDCO_OPTUNA_STORAGE`` (the team stack sets it to its PostgreSQL database ``optuna``), else
    ``sqlite:///$CDCO_HOME/tuning/optuna.db`` (the folder is created)."""
    if os.environ.get("CDCO_OPTUNA_STORAGE"):
        return os.environ["CDCO_OPTUNA_STORAGE"]
    folder = cdco_home() / "tuning"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def open_storage(url: str | None = None, attempts: int = 5) -> Any:
    """The Optuna storage at ``url`` (default :func:`default_storage`), its tables created if missing.

    Workers started together on a fresh database race to create the schema (PostgreSQL refuses the second
    ``CREATE TYPE``: a unique violation); the loser waits and opens the schema the winner made.
    """
    import time

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    url = url or default_storage()
    for attempt in range(attempts):
        try:
            return optuna.storages.get_storage(url)
        except (IntegrityError, ProgrammingError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def study_name(profile: str, method: str) -> str:
    return f"{profile}/{method}"


def _sampler(seed: int, n_complete: int, n_running: int = 0) -> Any:
    """TPE seeded by the study's position: the seed, the complete trials and the running trials numbered before
    this one (read after ``ask``, so two workers asking at the same instant get different counts and propose
    different settings; alone, or resumed after a kill, ``n_running`` is 0 and the k-th complete trial depends on
    the seed and k only)."""
    import numpy as np
    import optuna

    slot_seed = int(np.random.SeedSequence([seed, n_complete, n_running]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=slot_seed)


def _fail_orphans(study: Any) -> int:
    """Mark failed the RUNNING trials started on this host by a process that no longer exists."""
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host and isinstance(pid, int) and not _alive(pid):
            study.tell(t.number, state=TrialState.FAIL)
            failed += 1
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _suggest(trial: Any, key: str, dist: Distribution) -> Any:
    if isinstance(dist, Float):
        return trial.suggest_float(key, dist.low, dist.high, log=dist.log)
    if isinstance(dist, Int):
        return trial.suggest_int(key, dist.low, dist.high)
    return trial.suggest_categorical(key, list(dist.choices))


def run_study(cfg: Config, method: str, score: Callable[[list[str]], float], n_trials: int, *, seed: int = 0,
              storage: str | None = None, space: dict[str, Distribution] | None = None) -> Any:
    """Run (or resume) the study of ``method`` on ``cfg.profile`` until it holds ``n_trials`` complete trials.

    Args:
        cfg: the validated profile (search-space keys are checked against it first).
        method: registry name; its space is ``SEARCH_SPACES[method]`` unless ``space`` is given.
        score: overrides -> score (higher is better); an exception fails the trial and propagates.
        n_trials: complete trials the study should hold (the same for every method of a table).
        seed: the TPE sampler's seed.
        storage: an Optuna storage URL; default :func:`default_storage`.
        space: a search space to use instead of the declared one.

    Returns:
        The ``optuna.Study``.

    Raises:
        ConfigError: a search-space key the config does not have (before any trial).
        InputError: a method without a search space, or ``n_trials`` < 1.
    """
    import optuna
    from optuna.trial import TrialState

    space = space if space is not None else SEARCH_SPACES.get(method)
    check_search_space(cfg, method, space)
    assert space is not None
    if n_trials < 1:
        raise InputError(f"--trials must be at least 1, got {n_trials}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name(cfg.profile, method), storage=open_storage(storage),
                                direction="maximize", load_if_exists=True)
    _fail_orphans(study)
    while True:
        n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        n_running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if n_complete + n_running >= n_trials:  # done, or the rest is claimed by other workers
            return study
        trial = study.ask()  # the storage numbers trials atomically; TPE samples lazily, at the first suggest
        ahead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number < trial.number]
        n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        study.sampler = _sampler(seed, n_complete, len(ahead))
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", socket.gethostname())
        overrides = [_format(k, _suggest(trial, k, d)) for k, d in space.items()]
        trial.set_user_attr("overrides", overrides)
        try:
            value = float(score(overrides))
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, value)


def shortened(cfg: Config, fraction: float) -> Config:
    """``cfg`` with every stage's steps (and warm-up) scaled by ``fraction``, at least one step each: a trial's
    shortened training. Methods derive their schedules from these stages, so every method is shortened alike.

    Raises:
        InputError: ``fraction`` outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise InputError(f"--steps-fraction must be in (0, 1], got {fraction}")
    stages = [st.model_copy(update={"steps": max(1, round(st.steps * fraction)),
                                    "warmup_steps": round(st.warmup_steps * fraction)}) for st in cfg.train.stages]
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"stages": stages})})


def dev_score(cfg: Config, method: str, overrides: list[str], *, seed: int = 0, steps_fraction: float = 0.25,
              jobs: int = 1) -> tuple[float, dict[str, Any]]:
    """One trial: ``method`` with ``overrides``, trained shortened, scored on the dev splits.

    Training and evaluation go through the plan and the step cache like any run (a trial repeated after a kill
    reuses its finished stages).

    Returns:
        (objective = the dev evaluation's ``averages["primary"]``, the dev evaluation's metrics)

    Raises:
        ConfigError: an override the config refuses. InputError: a task without the split tuning scores.
    """
    from cdco_core.plan import build_plan
    from cdco_core.runner import run_plan

    trial_cfg = shortened(_validated(cfg, overrides, f"trial of {method}"), steps_fraction)
    plan = build_plan(trial_cfg, [method], [seed], split="dev")
    (node,) = plan.of_step("evaluate")
    record = run_plan(plan, [node.id], jobs=jobs)[node.id]
    return float(record.outputs["averages"]["primary"]), record.outputs


def best_overrides(study: Any) -> list[str]:
    """The best complete trial's overrides (``key=value``)."""
    return list(study.best_trial.user_attrs["overrides"])


def write_best(path: str | Path, best: dict[str, list[str]]) -> Path:
    """Write ``{method: [key=value, ...]}`` as YAML (merged into the file's methods when it exists).

    Returns:
        The file's path.
    """
    path = Path(path)
    current = read_tuned(path) if path.exists() else {}
    current.update({m: list(o) for m, o in best.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("# best settings per method from `cdco tune` (overrides; cdco compare --tuned FILE)\n"
                   + yaml.safe_dump(current, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path


def read_tuned(path: str | Path, known_methods: list[str] | None = None) -> dict[str, list[str]]:
    """Read a tuned-settings YAML: ``{method: [key=value, ...]}``.

    Raises:
        InputError: unreadable file, a wrong shape, or a method not in ``known_methods`` (when given).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"tuned settings {path}: cannot read ({e})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, list) and all(isinstance(o, str) for o in v)
                                            for v in raw.values()):
        raise InputError(f"tuned settings {path}: expected a mapping method -> list of key=value overrides")
    if known_methods is not None:
        unknown = sorted(set(raw) - set(known_methods))
        if unknown:
            raise InputError(f"tuned settings {path}: unknown method(s) {unknown}; known: {', '.join(known_methods)}")
    return {str(k): list(v) for k, v in raw.items()}
