"""The CPU wing: everything that exists only to make XLA:CPU faster, behind one switch.

The compute option `cpu_kernels` ("auto" | "off", the programs' `--cpu_kernels`; `policy.Compute`,
given where a program is compiled: `jaxcnn.programs.jit`) decides, in `policy`, whether a
model's ops stage these forms beside flax's and XLA's own; a program takes them only where it is
lowered for CPU. "off" gives exactly flax's layers and XLA's defaults.

- policy: which form every op takes (`Compute`: the switch and `conv_impl`; `using`;
  `lax.platform_dependent`)
- layers: `nn.Conv` and `nn.BatchNorm` as the wing stages them (same variables)
- conv, bias, pool, dense, norm: the ops' CPU forms (custom VJPs), taps: helpers they share
- onednn: oneDNN's convolutions through XLA's FFI, compiled on first use
- xla_options: compiler options for CPU programs; host_memory: glibc arena settings
- record: which forms a model's program runs (into checkpoints, results and benchmarks)
"""
