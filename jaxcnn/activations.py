"""What every layer of a model outputs, by layer name (flax's `capture_intermediates`):

    acts = activations.capture(model, variables, images)        # eval mode
    acts["conv1"]            # the first conv block's output [n, H, W, C] (after its ReLU)
    acts["conv1/conv"]       # the convolution inside it, before the ReLU
    acts["fc2"]              # LeNet-5's logits layer

Names are module paths joined by "/", as `nn.tabulate` and the parameters name them. Layers that
are functions rather than modules (pooling, LRN) have no output of their own here.
"""
from __future__ import annotations

from typing import Iterable

import jax


def capture(model, variables: dict, images: jax.Array,
            names: Iterable[str] | None = None) -> dict[str, jax.Array]:
    """Every submodule's output for `images` in eval mode, or only those `names` asks for (an
    unknown name is an error listing the valid ones). A module called twice keeps its last
    output."""
    _, state = model.apply(variables, images, capture_intermediates=True,
                           mutable=["intermediates"])
    outputs = {"/".join(path[:-1]): values[-1] for path, values in _calls(state["intermediates"])
               if len(path) > 1}
    if names is None:
        return outputs
    names = list(names)
    unknown = [n for n in names if n not in outputs]
    if unknown:
        raise ValueError(f"{type(model).__name__} has no layer {', '.join(map(repr, unknown))}; "
                         f"layers: {', '.join(outputs)}")
    return {n: outputs[n] for n in names}


def _calls(tree: dict, path: tuple[str, ...] = ()):
    """(path ending in "__call__", captured outputs) of every module call in the intermediates."""
    for key, value in tree.items():
        if key == "__call__":
            yield (*path, key), value
        elif isinstance(value, dict):
            yield from _calls(value, (*path, key))
