"""One process of the two-process test: `python tests/multihost_worker.py HOST:PORT ID WORKDIR`.

Trains LeNet-5 on the digits for a few steps over 2 processes × 2 CPU devices and prints a JSON
line with a checksum of its parameters (the test compares both processes' lines).
"""
import json
import sys

import jax
import numpy as np

sys.path.insert(0, __file__.rsplit("/tests/", 1)[0])
from jaxcnn import parallel, trainer  # noqa: E402
from jaxcnn.config import DataConfig, ModelConfig, OptimConfig, TrainConfig  # noqa: E402

address, process_id, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
parallel.initialize_distributed(address, 2, process_id, heartbeat_timeout_s=20)
cfg = TrainConfig(model=ModelConfig("lenet5", {"norm": "batch"}),
                  data=DataConfig(dataset="digits", batch_size=32, eval_batch_size=64),
                  optim=OptimConfig(optimizer="sgd", learning_rate=0.05),
                  workdir=workdir, steps=6, log_every=3, plot=False)
state, result = trainer.train_and_evaluate(cfg)
params = jax.tree.leaves(jax.device_get(state.params))
print(json.dumps({"devices": jax.device_count(), "step": int(jax.device_get(state.step)),
                  "checksum": float(sum(np.abs(p).sum() for p in params)),
                  "top1": result["top1"]}))
jax.distributed.shutdown()
