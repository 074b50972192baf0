"""A sweep's definition kept in its folder, so that the folder alone names the sweep.

The first launch writes `SWEEP/sweep.flags`: the resolved flagfile of the launch
(`sweep_flags.resolved_flagfile`: every base flag that was set, the axes, `--combine`, `--seeds`,
`--baseline`), headed by the launches that ran it (each with its code snapshot,
`launches/<time>/code`). Afterwards `--aggregate`, `--list`, `--retry_failed` and a resubmission
given only `--workdir=SWEEP` read the sweep from there. Flags given with them must agree with it:
the only changes taken are more seeds, more values at the end of an axis (each written back by the
launch that trains them) and another `--baseline` (the report's reference, no run's configuration).
Anything else stops with one line naming the difference: another sweep needs another folder (or
an edit of `sweep.flags` by hand, which is a plain flagfile).

Folders of sweeps launched before `sweep.flags` was kept use their newest launch's
`launches/<time>/sweep.flags` instead. A folder with neither and no run records is not a sweep:
`--aggregate` and a bare `--list` stop there rather than write a report of a sweep that never ran.
"""
from __future__ import annotations

import dataclasses
import glob
import os

from absl import flags

from experiments import model_flags, sweep_flags, train_flags
from jaxcnn.ablation import records
from jaxcnn.ablation.spec import BASE_NAME, Axis, Sweep

FLAGS = flags.FLAGS
DEFINITION_FILE = "sweep.flags"
LAUNCH_LINE = "# launch: "


def base_flags() -> set[str]:
    """The flags every run of a sweep shares (set or not): training and model flags."""
    return {f.name for module in (train_flags, model_flags)
            for f in FLAGS.get_flags_for_module(module.__name__)} - set(sweep_flags.NOT_AXES)


def definition_flags() -> set[str]:
    return base_flags() | set(sweep_flags.SWEEP_FLAGS)


def stored_path(sweep_dir: str) -> str | None:
    """SWEEP/sweep.flags, else (a sweep launched before it was kept) the newest launch's."""
    own = os.path.join(sweep_dir, DEFINITION_FILE)
    if os.path.isfile(own):
        return own
    launches = os.path.join(sweep_dir, "launches")
    names = sorted(os.listdir(launches)) if os.path.isdir(launches) else []  # <time>[+...]
    files = [os.path.join(launches, n, DEFINITION_FILE) for n in names]
    return next((f for f in reversed(files) if os.path.isfile(f)), None)


def recorded_runs(sweep_dir: str) -> list[str]:
    """The run directories (`<config>/seed=<S>`) that hold a result or a failure."""
    found = []
    for name in (records.RESULT_FILE, records.FAILED_FILE):
        pattern = os.path.join(glob.escape(sweep_dir), "*", "seed=*", name)
        found += [os.path.relpath(os.path.dirname(p), sweep_dir) for p in glob.glob(pattern)]
    return sorted(set(found))


@dataclasses.dataclass(frozen=True)
class Given:
    """What this command line says about the sweep (flags left at their default are absent)."""
    base: dict              # flag name -> (its serialized form, its value)
    axes: tuple[Axis, ...]
    combine: str | None
    seeds: int | None
    baseline: str | None

    @classmethod
    def from_flags(cls) -> "Given":
        def given(name):
            return None if FLAGS[name].using_default_value else FLAGS[name].value
        return cls({n: (FLAGS[n].serialize(), FLAGS[n].value) for n in sorted(base_flags())
                    if not FLAGS[n].using_default_value},
                   tuple(Axis.parse(t) for t in FLAGS.axis), given("combine"), given("seeds"),
                   given("baseline"))

    @property
    def defines_a_sweep(self) -> bool:
        return bool(self.base or self.axes or self.combine or self.seeds or self.baseline)


def adopt(sweep_dir: str, *, worker: bool = False, aggregate: bool = False,
          listing: bool = False) -> None:
    """Makes the flags the sweep stored in `sweep_dir`, with the seeds and axis values this command
    adds; raises ValueError (one line) when the command contradicts it, or when `sweep_dir` is no
    sweep for --aggregate or a bare --list. worker: a `--run_index` job, whose flags (its launch's
    sweep.flags) are its sweep; the stored one is read only when it is given none."""
    given = Given.from_flags()
    if worker and given.defines_a_sweep:
        return
    path = stored_path(sweep_dir)
    if path is None:
        return _check_unstored(sweep_dir, given, aggregate, listing)
    if os.path.dirname(path) != sweep_dir:
        print(f"{sweep_dir} keeps no {DEFINITION_FILE} (launched before it was kept): using its "
              f"newest launch's, {path}")
    stored = _read(path)
    merged, added, differences = _merge(stored, given)
    if differences:
        raise ValueError(f"{sweep_dir} holds another sweep (stored in {path}): "
                         f"{'; '.join(differences)}; name another --workdir, or leave these flags "
                         f"out to use the stored ones")
    new = [f"--axis={sweep_flags.axis_text(a)}" for a in merged.axes] + [f"--seeds={merged.seeds}"]
    if given.baseline is not None:
        new.append(f"--baseline={given.baseline}")
    FLAGS["axis"].unparse()
    FLAGS(["ablate", *new])
    if added:
        print(f"adding to the sweep in {sweep_dir}: {', '.join(added)}{_renumbered(stored, merged)}")


def _read(path: str) -> Sweep:
    """Sets the definition flags to the stored ones (every other base flag unset), and returns the
    stored sweep."""
    args = [a for a in FLAGS.read_flags_from_files([f"--flagfile={path}"], force_gnu=False)
            if _name(a) not in FLAGS or _name(a) in definition_flags()]   # not workdir, multi-host
    for name in definition_flags():
        FLAGS[name].unparse()
    try:
        FLAGS(["ablate", *args])
        return Sweep(tuple(Axis.parse(t) for t in FLAGS.axis), FLAGS.combine, FLAGS.seeds)
    except (flags.Error, ValueError) as e:
        raise ValueError(f"{path}: {str(e).removeprefix('ERROR:: ')} (edit the file, or name "
                         f"another --workdir)") from None


def _name(arg: str) -> str:
    name = arg.lstrip("-").partition("=")[0]
    if name not in FLAGS and name.startswith("no") and name[2:] in FLAGS:
        return name[2:]
    return name


def _merge(stored: Sweep, given: Given) -> tuple[Sweep, list[str], list[str]]:
    """The stored sweep with what `given` adds; what it adds; where it contradicts the sweep."""
    differences, added = [], []
    for name, (text, value) in given.base.items():
        flag = FLAGS[name]
        if flag.using_default_value:   # the stored sweep leaves it unset
            # (a model option left unset is the architecture's own default, not the flag's)
            if name in model_flags.MODEL_OPTION_FLAGS:
                differences.append(f"{text} (the sweep leaves --{name} unset: the model's own "
                                   f"default)")
            elif value != flag.default:
                differences.append(f"{text} (the sweep has the default, "
                                   f"{flag.serialize() or f'no --{name}'})")
        elif value != flag.value:
            differences.append(f"{text or f'no --{name}'} (the sweep has {flag.serialize()})")
    axes = list(stored.axes)
    for axis in given.axes:
        index = next((i for i, a in enumerate(axes) if a.name == axis.name), None)
        if index is None:
            names = ", ".join(a.name for a in stored.axes) or "none"
            differences.append(f"--axis={sweep_flags.axis_text(axis)} (the sweep has no axis "
                               f"{axis.name}; its axes: {names})")
            continue
        old = stored.axes[index].values
        if axis.values[:len(old)] != old:
            differences.append(f"--axis={sweep_flags.axis_text(axis)} (the sweep has "
                               f"--axis={sweep_flags.axis_text(stored.axes[index])}; values can "
                               f"only be added after these)")
        elif len(axis.values) > len(old):
            axes[index] = axis
            added.append(f"{axis.name} value(s) {', '.join(axis.values[len(old):])}")
    if given.combine is not None and given.combine != stored.mode:
        differences.append(f"--combine={given.combine} (the sweep has --combine={stored.mode})")
    seeds = stored.seeds
    if given.seeds is not None and given.seeds < stored.seeds:
        differences.append(f"--seeds={given.seeds} (the sweep has --seeds={stored.seeds}; "
                           f"seeds can only be added)")
    elif given.seeds is not None and given.seeds > stored.seeds:
        seeds = given.seeds
        added.append(f"seed(s) {', '.join(map(str, range(stored.seeds, seeds)))}")
    if differences:
        return stored, [], differences
    return Sweep(tuple(axes), stored.mode, seeds), added, []   # Sweep checks zipped lengths


def _renumbered(stored: Sweep, merged: Sweep) -> str:
    """Run directories come from values, so existing runs keep theirs (and their records); their
    indices are positions in the sweep, which added axis values (and, with several seeds, added
    configurations) move."""
    index = {r.directory: r.index for r in merged.runs()}
    moved = sum(index[r.directory] != r.index for r in stored.runs())
    if not moved:
        return ""
    return (f" ({moved} existing run(s) keep their directories and records but get other "
            f"indices: --list shows them; jobs already launched keep theirs, read with their "
            f"launch's flags)")


def _check_unstored(sweep_dir: str, given: Given, aggregate: bool, listing: bool) -> None:
    """A folder without a stored sweep: a new sweep, or one launched only as --run_index jobs."""
    recorded = recorded_runs(sweep_dir)
    if not recorded and (aggregate or (listing and not given.defines_a_sweep)):
        state = "is no sweep" if os.path.isdir(sweep_dir) else "does not exist"
        why = ("nothing to aggregate" if aggregate else
               "give a new sweep's flags to list its runs")
        raise ValueError(f"{sweep_dir} {state}: no {DEFINITION_FILE} and no run records ({why})")
    if recorded and not given.defines_a_sweep and any(
            not r.startswith(f"{BASE_NAME}/") for r in recorded):
        raise ValueError(f"{sweep_dir} holds runs ({recorded[0]}, ...) but no {DEFINITION_FILE}: "
                         f"give the sweep's flags (its base flags, --axis, --seeds)")


def save(sweep_dir: str, flagfile_text: str) -> None:
    """Writes SWEEP/sweep.flags once a launch (in SWEEP/launches) has been made: that launch's
    resolved flagfile, headed by every launch of the sweep so far (each ran its `code/` snapshot)."""
    launches = os.path.join(sweep_dir, "launches")
    names = sorted(n for n in os.listdir(launches) if os.path.isdir(os.path.join(launches, n)))
    header = [f"# The definition of the sweep in this folder, read back by experiments.ablate "
              f"--workdir={sweep_dir} (--aggregate, --list, --retry_failed, a resubmission); later "
              f"commands may only add seeds or axis values.",
              *(f"{LAUNCH_LINE}launches/{n} (its code: launches/{n}/code)" for n in names)]
    records.write_atomically(os.path.join(sweep_dir, DEFINITION_FILE),
                             "\n".join(header) + "\n" + flagfile_text)
