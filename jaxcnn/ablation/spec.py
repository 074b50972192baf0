"""What a sweep is: a base configuration plus axes, each one setting and its values, times seeds.

    sweep = Sweep(axes=(Axis("factorize", ("none", "2")), Axis("norm", ("batch", "lrn"))), seeds=3)
    sweep.runs()   # 12 runs: 4 configurations x seeds 0, 1, 2

Axes combine as a grid (every combination, the first axis slowest) or zipped (the i-th value of
every axis together). Settings and values are plain strings: what they mean is the caller's
business (`experiments.ablate` treats them as flags). Runs are ordered seed-major (every
configuration with seed 0, then seed 1, ...), so raising `seeds` later appends runs and keeps every
existing index; run directories come from the values alone, so they are stable across re-runs.
"""
from __future__ import annotations

import dataclasses
import itertools
import re

MODES = ("grid", "zip")
BASE_NAME = "base"   # the one configuration of a sweep without axes


@dataclasses.dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "Axis":
        """`name=v1,v2,...`; values that contain commas are separated by semicolons instead
        (`boundaries_epochs=30,60;20,40`)."""
        name, sep, values = text.partition("=")
        name = name.strip().lstrip("-")
        if not sep or not name or not values.strip():
            raise ValueError(f"--axis={text}: expected NAME=VALUE,VALUE,...")
        split = values.split(";" if ";" in values else ",")
        parsed = tuple(v.strip() for v in split)
        if any(not v for v in parsed):
            raise ValueError(f"--axis={text}: empty value")
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"--axis={text}: repeated value")
        return cls(name, parsed)


@dataclasses.dataclass(frozen=True)
class Run:
    index: int
    config: str                      # the configuration's name, e.g. "factorize=2,norm=lrn"
    seed: int
    overrides: tuple[tuple[str, str], ...]

    @property
    def directory(self) -> str:
        """Relative to the sweep's folder: `<config>/seed=<seed>`."""
        return f"{self.config}/seed={self.seed}"


def config_name(overrides: tuple[tuple[str, str], ...]) -> str:
    """Hydra's convention, `name=value,name=value`, with characters unsafe in a path replaced."""
    if not overrides:
        return BASE_NAME
    return ",".join(f"{k}={re.sub(r'[^A-Za-z0-9._+-]', '_', v)}" for k, v in overrides)


@dataclasses.dataclass(frozen=True)
class Sweep:
    axes: tuple[Axis, ...] = ()
    mode: str = "grid"
    seeds: int = 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown sweep mode {self.mode!r}; valid: {', '.join(MODES)}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be positive, got {self.seeds}")
        names = [a.name for a in self.axes]
        if len(set(names)) != len(names):
            raise ValueError(f"an axis is given twice: {', '.join(names)}")
        if self.mode == "zip" and len({len(a.values) for a in self.axes}) > 1:
            raise ValueError("zipped axes need the same number of values: " +
                             ", ".join(f"{a.name} has {len(a.values)}" for a in self.axes))

    def configs(self) -> list[tuple[tuple[str, str], ...]]:
        """Every configuration's overrides, in order."""
        if not self.axes:
            return [()]
        combos = (itertools.product(*(a.values for a in self.axes)) if self.mode == "grid"
                  else zip(*(a.values for a in self.axes)))
        return [tuple(zip((a.name for a in self.axes), values)) for values in combos]

    def runs(self) -> list[Run]:
        configs = self.configs()
        return [Run(seed * len(configs) + i, config_name(overrides), seed, overrides)
                for seed in range(self.seeds) for i, overrides in enumerate(configs)]

    def baseline(self, selection: str | None = None) -> str:
        """The name of the baseline configuration: the first value of every axis, or the values a
        selection such as `factorize=2,norm=lrn` names (axes it leaves out take their first value)."""
        chosen = {a.name: a.values[0] for a in self.axes}
        for part in filter(None, (selection or "").split(",")):
            name, _, value = part.partition("=")
            axis = next((a for a in self.axes if a.name == name.strip()), None)
            if axis is None or value.strip() not in axis.values:
                choices = "; ".join(f"{a.name}={'|'.join(a.values)}" for a in self.axes)
                raise ValueError(f"--baseline={selection}: {part!r} is not a value of an axis "
                                 f"({choices})")
            chosen[axis.name] = value.strip()
        names = {config_name(c) for c in self.configs()}
        baseline = config_name(tuple(chosen.items()))
        if baseline not in names:
            raise ValueError(f"--baseline={selection} names no configuration of this {self.mode} "
                             f"sweep; its configurations: {', '.join(sorted(names))}")
        return baseline
