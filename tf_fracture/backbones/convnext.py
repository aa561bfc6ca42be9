"""ConvNeXt (Tiny, Small) rebuilt for radiographs: greyscale stem, CBAM after each stage.

The graph mirrors ``keras.applications.ConvNeXt*`` layer for layer (same names, so the
ImageNet weights transfer by name) with three changes:

* the 7x7 depthwise convs are ``DepthwiseConv2D`` instead of Keras' grouped ``Conv2D``,
  whose TensorFlow CPU kernel is several times slower for the same result;
* the ImageNet mean/std input normalisation is folded into the stem conv (a 4x4, stride 4,
  unpadded conv, so the fold is exact); with a greyscale stem the folded RGB kernels are
  then summed, so a 1-channel image gives what the original gives for its 3-channel copy;
* optionally one CBAM after each of the four stages.

The head is global average pooling and LayerNorm (768-d for Tiny and Small), then a Dense
projection only when ``feature_dim`` is another width.

Reference:
    Liu et al., "A ConvNet for the 2020s", CVPR 2022.
"""

from __future__ import annotations

import keras
import numpy as np

from tf_fracture.backbones.config import BackboneConfig
from tf_fracture.backbones.registry import FEATURE_MAP, FEATURES, BackboneFamily, register_backbone
from tf_fracture.backbones.weights import fold_normalisation, load_keras_application, transfer_weights
from tf_fracture.configs.backbones import backbone_card
from tf_fracture.layers import CBAM, LayerScale

DEPTHS = {"tiny": (3, 3, 9, 3), "small": (3, 3, 27, 3)}
WIDTHS = (96, 192, 384, 768)
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_APPLICATIONS = {"tiny": "ConvNeXtTiny", "small": "ConvNeXtSmall"}
PROJECTION = "feature_projection"  # added only when feature_dim differs from 768


def _block(x, width: int, prefix: str):
    shortcut = x
    x = keras.layers.DepthwiseConv2D(7, padding="same", name=f"{prefix}_depthwise_conv")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_layernorm")(x)
    x = keras.layers.Dense(4 * width, name=f"{prefix}_pointwise_conv_1")(x)
    x = keras.layers.Activation("gelu", name=f"{prefix}_gelu")(x)
    x = keras.layers.Dense(width, name=f"{prefix}_pointwise_conv_2")(x)
    x = LayerScale(1e-6, name=f"{prefix}_layer_scale")(x)
    return keras.layers.Add(name=f"{prefix}_add")([shortcut, x])


def keras_application(variant: str, weights: str | None = None) -> keras.Model:
    return load_keras_application(getattr(keras.applications, _APPLICATIONS[variant]), weights, pooling="avg")


def build_graph(config: BackboneConfig, variant: str):
    prefix = f"convnext_{variant}"
    inputs = keras.Input((config.input_size, config.input_size, config.channels), name="image")
    x = keras.layers.Conv2D(WIDTHS[0], 4, strides=4, name=f"{prefix}_stem_conv")(inputs)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_stem_layernorm")(x)
    for stage, (depth, width) in enumerate(zip(DEPTHS[variant], WIDTHS, strict=True)):
        if stage > 0:
            x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_downsampling_layernorm_{stage - 1}")(x)
            x = keras.layers.Conv2D(width, 2, strides=2, name=f"{prefix}_downsampling_conv_{stage - 1}")(x)
        for block in range(depth):
            x = _block(x, width, f"{prefix}_stage_{stage}_block_{block}")
        if config.attention:
            x = CBAM(config.cbam_reduction, config.cbam_kernel_size, name=f"{prefix}_stage_{stage}_cbam")(x)
    x = keras.layers.Identity(name=FEATURE_MAP)(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{prefix}_head_gap")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_head_layernorm")(x)
    if CONVNEXT.projects(config, variant):
        x = keras.layers.Dense(config.feature_dim, name=PROJECTION)(x)
    return inputs, keras.layers.Identity(name=FEATURES)(x)


def transfer(application: keras.Model, backbone: keras.Model) -> None:
    """Initialises from the Keras application (``pooling="avg"``), folding its input normalisation."""
    prefix = f"convnext_{backbone.variant}"
    grey = backbone.stem == "grey"

    def stem(values):
        kernel, bias = fold_normalisation(*values, IMAGENET_MEAN, IMAGENET_STD, grey=grey)
        return [kernel, bias]

    def depthwise(values):
        kernel, bias = values  # grouped Conv2D kernel (7, 7, 1, C) -> depthwise (7, 7, C, 1)
        return [np.transpose(kernel, (0, 1, 3, 2)), bias]

    layers = backbone.layers
    depthwise_names = [layer.name for layer in layers if isinstance(layer, keras.layers.DepthwiseConv2D)]
    added = [layer.name for layer in layers if isinstance(layer, CBAM) or layer.name == PROJECTION]
    transfer_weights(
        application,
        backbone,
        transforms={f"{prefix}_stem_conv": stem, **{name: depthwise for name in depthwise_names}},
        rename={f"{prefix}_head_layernorm": application.layers[-1].name},
        skip=added,
    )


CONVNEXT = register_backbone(
    BackboneFamily(
        card=backbone_card("convnext"),
        build_graph=build_graph,
        keras_application=keras_application,
        transfer=transfer,
        native_width={variant: WIDTHS[-1] for variant in DEPTHS},
        summary="ConvNeXt (Liu et al. 2022); CBAM after each of the 4 stages; 768-d features.",
    )
)
