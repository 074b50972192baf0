"""Which kernels a model's program runs here, as a JSON-able record: written into every checkpoint's
metadata, every sweep result and every benchmark, so that results computed with different
implementations are never mixed unknowingly.

    record.record(model, (32, 32, 1))
    # {"platform": "cpu", "devices": 1, "cpu_kernels": "auto", "cpu_forms": true,
    #  "conv_impl": "auto", "onednn": "built (float32)",
    #  "convolutions": {"conv1/conv": "single_channel", "conv2/conv": "onednn", ...},
    #  "dense": {"fc1": "xla", "fc2": "xla"}}
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.cpu import onednn, policy


def onednn_status() -> str:
    """Whether the convolutions can run oneDNN's kernels here; off CPU they never do, so the
    library is not built just to say so."""
    if jax.default_backend() != "cpu":
        return f"not used on {jax.default_backend()}"
    if not onednn.available():
        return f"unavailable ({onednn.unavailable_reason()})"
    return "built (float32, bfloat16)" if onednn.native_bfloat16() else "built (float32)"


def record(model: nn.Module, image_shape: tuple[int, ...],
           compute: policy.Compute = policy.Compute()) -> dict:
    """The platform and device count, the compute options (`compute`: its `cpu_kernels`, whether
    the wing's forms are in its programs here, `cpu_forms`: `policy.offered`, its `conv_impl`),
    oneDNN's status, and the form of each convolution layer of `model` on CPU (by its module
    path; "auto" resolved per shape by `policy.conv_form`; "xla" where the wing is not offered)
    and of each dense layer ("blocked" where `dense.prefers_blocked`, else "xla"). Pooling, conv
    biases and batch norm take the wing's forms exactly where `cpu_forms` is true."""
    forms: dict[type, dict[str, str]] = {nn.Conv: {}, nn.Dense: {}}

    def note_layer(next_fun, args, kwargs, context):
        before = len(traced)
        out = next_fun(*args, **kwargs)
        kind = next((k for k in forms if isinstance(context.module, k)), None)
        if kind and context.method_name == "__call__":
            name = "/".join(context.module.path) or context.module.name
            forms[kind][name] = traced[before] if len(traced) > before else "xla"
        return out

    policy.FORMS_TRACED = traced = []
    try:
        with policy.using(compute), nn.intercept_methods(note_layer):
            jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x),
                           jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    finally:
        policy.FORMS_TRACED = None
    return {"platform": jax.default_backend(), "devices": jax.device_count(),
            "cpu_kernels": compute.cpu_kernels, "cpu_forms": policy.offered(compute),
            "conv_impl": compute.conv_impl,
            "onednn": (onednn_status() if compute.cpu_kernels == "auto"
                       else "not used (cpu_kernels=off)"),
            "convolutions": forms[nn.Conv], "dense": forms[nn.Dense]}
