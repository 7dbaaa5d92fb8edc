"""Topology detection: from the environment or injected, and never a silent rank 0."""

from __future__ import annotations

import pytest

from shards import ShardError
from shards.loading.world import detect_rank
from shards.plan.topology import Topology


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (0, 1)),
        ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}, (3, 8)),
        ({"SLURM_PROCID": "5", "SLURM_NTASKS": "6"}, (5, 6)),
    ],
)
def test_detect_rank(env, expected):
    assert detect_rank(env) == expected


@pytest.mark.parametrize("env", [{"LOCAL_RANK": "1"}, {"RANK": "1"}, {"WORLD_SIZE": "2"}, {"LOCAL_WORLD_SIZE": "2"}])
def test_partial_environment_raises(env):
    with pytest.raises(ShardError):
        detect_rank(env)


def test_topology_checks_and_slots():
    assert Topology(2, 4, worker=1, num_workers=3).slot == 7
    assert Topology(2, 4).slot == 2
    for bad in [(4, 4, 0, 0), (0, 1, 2, 2), (-1, 2, 0, 0)]:
        with pytest.raises(ShardError):
            Topology(*bad)
