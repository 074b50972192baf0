"""Every flagfile parses into a config whose model builds at the configured input size, opens with
the command that runs it and the result to expect, and the bare command equals the quick start;
every sweep file likewise, for each of its configurations."""
import glob
import os
import re

import jax
import jax.numpy as jnp
import pytest
from absl import flags

from experiments import ablate, sweep_flags, train_flags  # noqa: F401  (ablate: its flags)
from jaxcnn import models
from jaxcnn.cpu.policy import Compute

EXPERIMENTS = os.path.join(os.path.dirname(__file__), "..", "experiments")
FLAGFILES = sorted(glob.glob(os.path.join(EXPERIMENTS, "flags", "*.flags")))
SWEEP_FILES = sorted(glob.glob(os.path.join(EXPERIMENTS, "sweeps", "*.flags")))
FLAGS = flags.FLAGS


def parse(*args):
    FLAGS.unparse_flags()
    FLAGS(["prog", *args])
    return train_flags.config_from_flags()


@pytest.fixture(autouse=True)
def reset_flags():
    yield
    FLAGS.unparse_flags()


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_builds_its_model_and_documents_itself(path):
    header = [line for line in open(path) if line.startswith("#")]
    text = "".join(header)
    assert "python -m experiments." in text and "Expected" in text, path
    cfg = parse(f"--flagfile={path}")
    model = models.create(cfg.model.name, 10, **cfg.model.options)
    x = jnp.zeros((1, cfg.data.image_size, cfg.data.image_size, cfg.data.channels))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.eval_shape(model.apply, variables, x).shape == (1, 10)


def test_bare_command_is_the_quick_start():
    quickstart = [p for p in FLAGFILES if p.endswith("quickstart.flags")][0]
    assert parse() == parse(f"--flagfile={quickstart}")


def test_paddle_run_is_expressed_in_mean_loss_convention():
    cfg = parse(f"--flagfile={[p for p in FLAGFILES if 'paddle' in p][0]}")
    assert (cfg.optim.learning_rate, cfg.optim.l2, cfg.optim.momentum) == (0.1, 2e-4, 0.9)
    assert (cfg.optim.schedule, cfg.optim.discexp_samples, cfg.data.batch_size) == (
        "discexp", 5_000_000, 128)
    assert cfg.model.name == "vgg_cifar" and cfg.epochs == 200


def test_grad_accum_and_profile_flags_become_config_or_one_clear_error():
    cfg = parse("--batch_size=64", "--grad_accum_steps=4", "--profile_steps=2:3")
    assert (cfg.data.batch_size, cfg.optim.grad_accum_steps, cfg.profile_steps) == (64, 4, (2, 3))
    cases = {
        ("--grad_accum_steps=0",): "--grad_accum_steps must be positive, got 0",
        ("--batch_size=64", "--grad_accum_steps=3"):
            "--batch_size=64 must be a multiple of --grad_accum_steps=3",
        **{(f"--profile_steps={v}",): f"--profile_steps must be A:B, the first and last step to "
                                      f"trace with 1 <= A <= B, got '{v}'"
           for v in ("5", "b:a", "3:2", "0:2", "2:")},
    }
    for args, message in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            parse(*args)


def test_compute_flags_become_the_configs_compute_options_not_model_options():
    cfg = parse("--cpu_kernels=off", "--conv_impl=xla", "--norm=batch")
    assert cfg.compute == Compute(cpu_kernels="off", conv_impl="xla")
    assert cfg.model.options == {"norm": "batch"}
    assert parse().compute == Compute()
    with pytest.raises(ValueError, match="conv_impl=im2col is a CPU kernel form"):
        parse("--cpu_kernels=off", "--conv_impl=im2col")


@pytest.mark.parametrize("path", SWEEP_FILES, ids=os.path.basename)
def test_sweep_file_builds_every_configuration_and_documents_itself(path, tmp_path):
    text = "".join(line for line in open(path) if line.startswith("#"))
    assert f"--sweep_file=experiments/sweeps/{os.path.basename(path)}" in text
    assert "Tests" in text and "Expected" in text, path
    parse(f"--flagfile={path}")
    sweep = sweep_flags.sweep_from_flags()
    assert len(sweep.axes) == 1 and len(sweep.configs()) >= 2
    sweep_flags.check_configs(sweep, str(tmp_path))   # raises on a configuration that cannot build
