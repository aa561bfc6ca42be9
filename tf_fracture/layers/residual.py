"""ConvNeXt's residual-branch layer scale.

Keras' ConvNeXt application defines it without registering it, so a saved model that
contains it cannot be reloaded without ``custom_objects``; this one is registered.
"""

from __future__ import annotations

import keras
from keras import ops

from tf_fracture.validation import check_number


@keras.saving.register_keras_serializable(package="tf_fracture")
class LayerScale(keras.layers.Layer):
    """Multiplies the last axis by a learnt vector ``gamma`` (initialised to ``init_value``).

    Args:
        init_value: initial value of every entry of ``gamma`` (1e-6 in ConvNeXt).

    Reference:
        Touvron et al., "Going deeper with Image Transformers" (CaiT), ICCV 2021.
    """

    def __init__(self, init_value: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init_value = check_number("init_value", init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_value),
            trainable=True,
        )

    def call(self, x):
        return x * ops.cast(self.gamma, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}
