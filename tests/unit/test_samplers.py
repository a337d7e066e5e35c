"""Task samplers: probabilities by hand, exact resume, the registry (SAMPLERS)."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from cdco_core import samplers
from cdco_core.errors import InputError
from cdco_core.samplers import (
    BatchLevelSampler,
    TaskSampler,
    get_sampler,
    list_samplers,
    sampler_from_config,
)

SIZES = [1000, 100, 10]


@pytest.mark.parametrize(
    ("temperature", "expected"),
    [
        # T = 2: sqrt -> (31.6228, 10, 3.1623) / 44.7851
        (2.0, [0.7061, 0.2233, 0.0706]),
        # T = 10: n^0.1 -> (1.9953, 1.5849, 1.2589) / 4.8391
        (10.0, [0.4123, 0.3275, 0.2602]),
        (1.0, [1000 / 1110, 100 / 1110, 10 / 1110]),
    ],
)
def test_temperature_probabilities(temperature, expected):
    p = get_sampler("temperature", temperature=temperature).probabilities(SIZES)
    assert p.shape == (3,)
    assert p == pytest.approx(expected, abs=1e-4)


def test_proportional_and_uniform():
    assert get_sampler("proportional").probabilities([3, 1]) == pytest.approx([0.75, 0.25])
    assert get_sampler("uniform").probabilities(SIZES) == pytest.approx([1 / 3] * 3)
    # log-space normalisation: sizes far beyond float range of n^(1/T) products stay exact
    assert get_sampler("temperature", temperature=0.01).probabilities([10**6, 10**6]) == pytest.approx([0.5, 0.5])


def test_draw_frequencies_follow_probabilities():
    sampler = get_sampler("temperature", temperature=2.0)
    sampler.setup(SIZES)
    rng = np.random.default_rng(0)
    draws = [sampler.next_task(rng) for _ in range(4000)]
    freq = np.bincount(draws, minlength=3) / len(draws)
    assert freq == pytest.approx([0.7061, 0.2233, 0.0706], abs=0.025)
    assert sampler.counts == np.bincount(draws, minlength=3).tolist()


def test_state_round_trip_gives_same_future_draws():
    sampler = get_sampler("temperature", temperature=2.0)
    sampler.setup(SIZES)
    rng = np.random.default_rng(123)
    for _ in range(7):
        sampler.next_task(rng)
    state = json.loads(json.dumps(sampler.state_dict()))  # what a checkpoint stores: JSON-able
    rng_state = rng.bit_generator.state
    future = [sampler.next_task(rng) for _ in range(50)]
    final_counts = sampler.counts

    resumed = get_sampler("temperature", temperature=2.0)  # a fresh process: no setup() call
    resumed.load_state_dict(state)
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = rng_state
    assert [resumed.next_task(rng2) for _ in range(50)] == future
    assert resumed.counts == final_counts
    assert len(set(future)) > 1  # the comparison is not trivially constant


def test_state_from_other_sampler_is_refused():
    sampler = get_sampler("temperature", temperature=2.0)
    sampler.setup(SIZES)
    with pytest.raises(InputError, match="does not match the configured sampler 'temperature'"):
        get_sampler("temperature", temperature=5.0).load_state_dict(sampler.state_dict())
    with pytest.raises(InputError, match="does not match"):
        get_sampler("uniform").load_state_dict(sampler.state_dict())


def test_bad_inputs():
    with pytest.raises(
        InputError, match="unknown sampler 'roundrobin'.*proportional, temperature, uncertainty, uniform"
    ):
        get_sampler("roundrobin")
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(InputError, match="sampler_temperature must be a finite number > 0"):
            get_sampler("temperature", temperature=bad)
    with pytest.raises(InputError, match=r"sampler 'uniform' got arguments \['temperature'\]"):
        get_sampler("uniform", temperature=2.0)
    with pytest.raises(InputError, match=r"at least one training row; tasks at positions \[1\]"):
        get_sampler("uniform").probabilities([5, 0])
    with pytest.raises(InputError, match="non-empty list"):
        get_sampler("uniform").probabilities([])
    with pytest.raises(InputError, match="integer row counts"):
        get_sampler("uniform").probabilities([1.5, 2])
    with pytest.raises(RuntimeError, match="call setup"):
        get_sampler("uniform").next_task(np.random.default_rng(0))


def test_sampler_from_config_passes_temperature_only_where_taken():
    train = types.SimpleNamespace(sampler="temperature", sampler_temperature=10.0)
    assert sampler_from_config(train).probabilities(SIZES) == pytest.approx([0.4123, 0.3275, 0.2602], abs=1e-4)
    train.sampler = "uniform"
    assert sampler_from_config(train).probabilities(SIZES) == pytest.approx([1 / 3] * 3)


def test_register_sampler_in_registry(monkeypatch):
    # A new sampler is one SAMPLERS.register call; a clash is refused; an unknown name lists the registered ones.
    monkeypatch.setattr(samplers.SAMPLERS, "_entries", dict(samplers.SAMPLERS._entries))

    class FirstOnly(TaskSampler):
        def log_weights(self, sizes):
            return np.where(np.arange(len(sizes)) == 0, 0.0, -np.inf)

    samplers.SAMPLERS.register("first_only", FirstOnly)
    assert "first_only" in list_samplers()
    assert get_sampler("first_only").probabilities([4, 4]) == pytest.approx([1.0, 0.0])

    class EntropyDemo(BatchLevelSampler):
        pass

    samplers.SAMPLERS.register("entropy_demo", EntropyDemo)
    demo = get_sampler("entropy_demo")
    assert demo.batch_level and isinstance(demo, BatchLevelSampler)
    with pytest.raises(ValueError, match="'first_only' is already registered"):
        samplers.SAMPLERS.register("first_only", EntropyDemo)
    with pytest.raises(InputError, match=r"unknown sampler 'ghost'; available: .*first_only"):
        get_sampler("ghost")


def test_batch_level_select_top_k_by_hand():
    # scores (0.2, 0.9, 0.5, 0.9): top 3 = rows 1 and 3 (tie, kept in position order), then row 2
    sampler = BatchLevelSampler()
    picked = sampler.select([0, 0, 1, 1], np.array([0.2, 0.9, 0.5, 0.9]), k=3)
    assert picked.tolist() == [1, 3, 2]
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\]"):
        sampler.select([0, 0, 1, 1], np.zeros(4), k=5)
    with pytest.raises(ValueError, match="one per candidate"):
        sampler.select([0, 0, 1, 1], np.zeros(3), k=1)
