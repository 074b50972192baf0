"""What a training program prints: a progress bar and plain result lines on the console, absl's
full form only in log files (--log_dir), no backend noise at start."""
import glob
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ (\S+\.py):\d+\] ", re.MULTILINE)


def train(*args):
    # Without JAX_PLATFORMS, JAX looks for every backend (and says so at INFO unless quieted).
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    return subprocess.run([sys.executable, "-m", "experiments.run", "--batch_size=32",
                           "--eval_batch_size=64", "--eval_every_epochs=0.1", "--log_every=2",
                           *args], cwd=REPO, env=env, capture_output=True, text=True, check=True,
                          timeout=300)


def test_console_lines_are_plain_and_log_files_keep_the_full_form(tmp_path):
    workdir = tmp_path / "run"
    first = train(f"--workdir={workdir}", "--steps=5")       # 46 steps per epoch: eval at 5
    lines = first.stdout.splitlines()
    assert len(lines) == 2 and re.fullmatch(
        r"test  step 5/5  epoch 0\.11  loss [\d.]+  top1 [\d.]+%  top5 [\d.]+%", lines[0])
    assert lines[1].startswith("test accuracy: ") and lines[1].endswith(f"(workdir: {workdir})")
    assert "Unable to initialize backend" not in first.stderr
    # Only log lines that are neither progress nor results keep absl's prefix on the console.
    assert set(ABSL_PREFIX.findall(first.stderr)) == {"trainer.py"}, first.stderr
    assert re.search(r"100%\|[^|]+\| 5/5 \[", first.stderr), first.stderr     # the bar, finished

    resumed = train(f"--workdir={workdir}", "--steps=10", f"--log_dir={tmp_path / 'logs'}")
    assert not ABSL_PREFIX.search(resumed.stderr), resumed.stderr     # every log to the file
    assert re.search(r" 50%\|[^|]+\| 5/10 \[", resumed.stderr)        # the bar starts at step 5
    assert re.search(r"100%\|[^|]+\| 10/10 \[", resumed.stderr)
    assert resumed.stdout.splitlines()[0].startswith("test  step 10/10  epoch 0.22  loss ")
    log, = glob.glob(str(tmp_path / "logs" / "*.INFO"))
    logged = [(m.group(1), line[m.end():]) for line in open(log).read().splitlines()
              if (m := ABSL_PREFIX.match(line))]
    messages = [text.split()[:3] for source, text in logged if source == "metric_writers.py"]
    assert [" ".join(m) for m in messages] == ["train step 6/10", "train step 8/10",
                                               "train step 10/10", "test step 10/10"]
    assert any(source == "trainer.py" and text.startswith("resumed from step 5")
               for source, text in logged)
    assert any(source == "run.py" and text.startswith("test top-1 ") for source, text in logged)
