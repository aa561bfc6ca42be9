"""Rebuilding a Keras functional network with a new input, swapped layers and inserted blocks.

EfficientNetV2 and MobileNetV3 are made of stock Keras layers, so rather than re-typing
their block tables we re-run Keras' own graph (``keras.models.clone_model``) on a new
input and edit it on the way: layers can be rebuilt from an edited config, and a block
can be inserted in front of a named layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import keras


def rebuild_graph(
    source: keras.Model,
    inputs: keras.KerasTensor,
    *,
    edit_config: Mapping[str, Callable[[dict], dict]] | None = None,
    insert_before: Mapping[str, Callable[[], keras.layers.Layer]] | None = None,
) -> keras.KerasTensor:
    """Runs ``source``'s graph on ``inputs`` with fresh layers and returns the output tensor.

    Args:
        source: a functional model.
        inputs: the new input tensor (its channel count may differ: layers are rebuilt
            from their configs and so build on the new shapes).
        edit_config: ``{layer name: fn(config) -> config}`` for layers to rebuild differently.
        insert_before: ``{layer name: factory}``; the block the factory makes is applied
            to the first input of the named layer.
    """
    source = _without_global_pooling(source)
    edit_config = dict(edit_config or {})
    insert_before = dict(insert_before or {})
    names = {layer.name for layer in source.layers}
    missing = sorted((set(edit_config) | set(insert_before)) - names)
    if missing:
        raise ValueError(f"Layers {missing} are not in {source.name!r}; the network's layout has changed.")

    def clone(operation):
        if not isinstance(operation, keras.layers.Layer):
            return operation  # a stateless op such as `x + 3.0`
        config = operation.get_config()
        if operation.name in edit_config:
            config = edit_config[operation.name](dict(config))
        return operation.__class__.from_config(config)

    def call(layer, *args, **kwargs):
        if layer.name in insert_before:
            args = (insert_before[layer.name]()(args[0]), *args[1:])
        return layer(*args, **kwargs)

    if isinstance(source.input, (list, tuple)):
        inputs = [inputs]
    rebuilt = keras.models.clone_model(source, input_tensors=inputs, clone_function=clone, call_function=call)
    return rebuilt.output


def with_filters(filters: int) -> Callable[[dict], dict]:
    def edit(config: dict) -> dict:
        return {**config, "filters": filters}

    return edit


def _without_global_pooling(source: keras.Model) -> keras.Model:
    """The network up to its last feature map (drops a ``pooling="avg"``/``"max"`` head)."""
    last = source.layers[-1]
    if isinstance(last, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
        return keras.Model(source.inputs, last.input, name=source.name)
    return source
