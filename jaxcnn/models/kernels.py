"""Which kernels a model's program runs here, as a JSON-able record: written into every checkpoint's
metadata, every sweep result and every benchmark, so that results computed with different
implementations are never mixed unknowingly.

    kernels.record(model, (32, 32, 1))
    # {"platform": "cpu", "devices": 1, "conv_impl": "auto", "onednn": "built (float32)",
    #  "convolutions": {"conv1": "single_channel", "conv2": "onednn", ...},
    #  "cpu_forms": true}
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import onednn
from jaxcnn.models import conv_ops


def onednn_status() -> str:
    """Whether the convolutions can run oneDNN's kernels here; off CPU they never do, so the
    library is not built just to say so."""
    if jax.default_backend() != "cpu":
        return f"not used on {jax.default_backend()}"
    if not onednn.available():
        return f"unavailable ({onednn.unavailable_reason()})"
    return "built (float32, bfloat16)" if onednn.native_bfloat16() else "built (float32)"


def record(model: nn.Module, image_shape: tuple[int, ...]) -> dict:
    """The platform and device count, the model's `conv_impl`, oneDNN's status, the form of each
    convolution layer (by its module path; "auto" resolved per shape by `conv_ops.auto_choice`,
    the forced form otherwise), and whether the CPU forms of bias, pooling, dense and batch-norm
    gradients are in the program (on CPU, `*_ops`)."""
    impl = getattr(model, "conv_impl", "xla")
    forms: dict[str, str] = {}

    def note_layer(next_fun, args, kwargs, context):
        before = len(choices)
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(context.module, nn.Conv):
            name = "/".join(context.module.path) or context.module.name
            forms[name] = choices[before] if len(choices) > before else (
                impl if impl != "auto" else "xla")
        return out

    conv_ops.CHOICES_TRACED = choices = []
    try:
        with nn.intercept_methods(note_layer):
            jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x),
                           jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    finally:
        conv_ops.CHOICES_TRACED = None
    return {"platform": jax.default_backend(), "devices": jax.device_count(), "conv_impl": impl,
            "onednn": onednn_status(), "convolutions": forms,
            "cpu_forms": jax.default_backend() == "cpu"}
