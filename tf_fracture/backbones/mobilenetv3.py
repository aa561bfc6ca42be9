"""MobileNetV3 (Large, Small) rebuilt for radiographs: greyscale stem, a 768-d conv and CBAM.

Built from Keras' own MobileNetV3 graph (see `surgery`), with:

* a greyscale stem: the first conv's RGB kernels summed. The built-in rescaling
  (``x / 127.5 - 1``) treats channels alike, so the sum is exact;
* after the final conv (960 channels in Large), an added 1x1 conv to ``feature_dim``
  (768) channels (+BN, hard-swish), then CBAM, then global average pooling.

Reference:
    Howard et al., "Searching for MobileNetV3", ICCV 2019.
"""

from __future__ import annotations

import keras

from tf_fracture.backbones.config import BackboneConfig
from tf_fracture.backbones.registry import BackboneFamily, register_backbone
from tf_fracture.backbones.surgery import rebuild_graph
from tf_fracture.backbones.weights import grey_kernel, load_keras_application, transfer_weights
from tf_fracture.layers import CBAM

_APPLICATIONS = {"large": "MobileNetV3Large", "small": "MobileNetV3Small"}


def build_mobilenetv3(config: BackboneConfig, variant: str, source: keras.Model | None = None) -> keras.Model:
    if source is None:
        constructor = getattr(keras.applications, _APPLICATIONS[variant])
        source = load_keras_application(constructor, config.weights)
    inputs = keras.Input((config.input_size, config.input_size, config.channels), name="image")
    x = rebuild_graph(source, inputs)
    if config.feature_dim is not None:
        x = keras.layers.Conv2D(config.feature_dim, 1, use_bias=False, name="feature_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.999, name="feature_bn")(x)
        x = keras.layers.Activation("hard_swish", name="feature_activation")(x)
    if config.attention:
        x = CBAM(config.cbam_reduction, config.cbam_kernel_size, name="top_cbam")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    features = keras.layers.Identity(name="features")(x)
    model = keras.Model(inputs, features, name=config.model_name(f"mobilenetv3_{variant}"))

    added = ["feature_conv", "feature_bn", *(layer.name for layer in model.layers if isinstance(layer, CBAM))]
    stem = {"conv": lambda values: [grey_kernel(values[0])]} if config.stem == "grey" else {}
    transfer_weights(source, model, transforms=stem, skip=added)
    return model


MOBILENETV3 = register_backbone(
    BackboneFamily(
        name="mobilenetv3",
        variants=tuple(_APPLICATIONS),
        default_variant="large",
        build=build_mobilenetv3,
        summary="MobileNetV3 (Howard et al. 2019); a 960->768 1x1 conv, then CBAM; 768-d features.",
    )
)
