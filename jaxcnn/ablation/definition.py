"""The definition of a sweep run from Python (`runner.run_sweep`), kept in its folder as
`sweep.json`: the base configuration, the axes with their values, how they combine, the seeds.

A later call on the same folder must give the same base and axes; it may add seeds, and values at
the end of an axis (runs are seed-major and their folders named by their values, so existing runs
keep their folders and records). Anything else stops with one line naming the difference: another
sweep needs another folder. (`experiments.ablate` keeps its definition as a flagfile,
`sweep.flags`, instead: its axes are flags.)
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

from jaxcnn.ablation.spec import Axis, Sweep
from jaxcnn.config import TrainConfig
from jaxcnn.files import write_atomically
from jaxcnn.packing import flat_fields

SWEEP_FILE = "sweep.json"


def adopt(sweep_dir: str, base: TrainConfig, axes: dict[str, Sequence[Any]], seeds: int,
          combine: str = "grid") -> tuple[Sweep, dict[str, dict[str, Any]]]:
    """The sweep these arguments define, checked against (and extending) the one stored in
    `sweep_dir`, which is written. Returns it and, per axis, each value's name to the value."""
    given = _as_json(base, axes, seeds, combine)
    path = os.path.join(sweep_dir, SWEEP_FILE)
    if os.path.exists(path):
        with open(path) as f:
            _check_extends(json.load(f), given, sweep_dir)
    values = {name: {str(v): v for v in vs} for name, vs in axes.items()}   # run folders' names
    for name, vs in axes.items():
        if len(values[name]) != len(vs):
            raise ValueError(f"axis {name}: values {list(vs)} repeat a value (as text)")
    sweep = Sweep(tuple(Axis(name, tuple(values[name])) for name in axes), combine, seeds)
    os.makedirs(sweep_dir, exist_ok=True)
    write_atomically(path, json.dumps(given, indent=1))
    return sweep, values


def _as_json(base: TrainConfig, axes: dict, seeds: int, combine: str) -> dict:
    base = dataclasses.replace(base, workdir="")   # each run has its own
    try:
        text = json.dumps({"base": dataclasses.asdict(base), "axes": axes, "combine": combine,
                           "seeds": seeds}, default=str)
    except TypeError as e:
        raise ValueError(f"the sweep's axis values must be JSON values: {e}") from None
    return json.loads(text)


def _check_extends(stored: dict, given: dict, sweep_dir: str) -> None:
    differences = []
    if stored["base"] != given["base"]:
        old, new = flat_fields(stored["base"]), flat_fields(given["base"])
        fields = sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
        differences.append(f"another base configuration (differs in {', '.join(fields)})")
    if stored["combine"] != given["combine"]:
        differences.append(f"combine={given['combine']} (the sweep has {stored['combine']})")
    if list(stored["axes"]) != list(given["axes"]):
        differences.append(f"axes {list(given['axes'])} (the sweep has {list(stored['axes'])})")
    else:
        for name, old in stored["axes"].items():
            if given["axes"][name][:len(old)] != old:
                differences.append(f"axis {name}={given['axes'][name]} (the sweep has {old}; "
                                   f"values can only be added after these)")
    if given["seeds"] < stored["seeds"]:
        differences.append(f"seeds={given['seeds']} (the sweep has {stored['seeds']}; seeds can "
                           f"only be added)")
    if differences:
        raise ValueError(f"{sweep_dir} holds another sweep ({SWEEP_FILE}): "
                         f"{'; '.join(differences)}; use another folder")
