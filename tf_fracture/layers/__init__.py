"""Custom Keras layers of tf-fracture; all registered for ``keras.saving.load_model``."""

from tf_fracture.layers.cbam import CBAM, ChannelGate, SpatialGate, SpatialGateLogits
from tf_fracture.layers.residual import LayerScale

__all__ = ["CBAM", "ChannelGate", "LayerScale", "SpatialGate", "SpatialGateLogits"]
