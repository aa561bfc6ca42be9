"""MobileNetV3 (Large, Small and their edge variants) rebuilt for radiographs: greyscale stem, a 768-d conv, CBAM.

Built from Keras' own MobileNetV3 graph (see `surgery`), with:

* a greyscale stem: the first conv's RGB kernels summed. The built-in rescaling
  (``x / 127.5 - 1``) treats channels alike, so the sum is exact;
* after the final conv (960 channels in Large, 576 in Small), an added 1x1 conv to
  ``feature_dim`` (768) channels (+BN, hard-swish) when that differs from the network's
  own width, then CBAM, then global average pooling.

The edge variants ``"large_minimal"`` and ``"small_minimal"`` rebuild Keras'
``minimalistic=True`` networks (ReLU instead of hard-swish, no squeeze-and-excitation,
3x3 depthwise kernels; published ImageNet weights exist for both) and use ReLU in the added
1x1 conv too. They exist for full-integer (int8) TFLite: XNNPACK has no int8 hard-swish,
so an int8 model of the method's MobileNetV3 splits into many delegate partitions with
reference kernels between them and runs slower than float32, while the minimalistic network
with CBAM quantises whole and runs as one partition (see ``benchmarks/edge_benchmark.py``).

Reference:
    Howard et al., "Searching for MobileNetV3", ICCV 2019 (the minimalistic models are
    described in the TensorFlow Models release of MobileNetV3, "MobileNetV3-Large/Small
    Minimalistic").
"""

from __future__ import annotations

import keras

from tf_fracture.backbones.config import BackboneConfig
from tf_fracture.backbones.registry import FEATURE_MAP, FEATURES, BackboneFamily, register_backbone
from tf_fracture.backbones.surgery import rebuild_graph
from tf_fracture.backbones.weights import grey_kernel, load_keras_application, transfer_weights
from tf_fracture.configs.backbones import backbone_card
from tf_fracture.layers import CBAM

# variant -> (Keras constructor, minimalistic)
_APPLICATIONS = {
    "large": ("MobileNetV3Large", False),
    "small": ("MobileNetV3Small", False),
    "large_minimal": ("MobileNetV3Large", True),
    "small_minimal": ("MobileNetV3Small", True),
}
EDGE_VARIANTS = tuple(variant for variant, (_, minimalistic) in _APPLICATIONS.items() if minimalistic)
ADDED = ("feature_conv", "feature_bn")
# The last block before the final downsampling (stride 16): a map twice as fine as the network's own.
_STRIDE_16 = {"small": "expanded_conv_7_add", "large": "expanded_conv_11_add"}
TAPS = {16: {variant: _STRIDE_16[variant.removesuffix("_minimal")] for variant in _APPLICATIONS}}


def keras_application(variant: str, weights: str | None = None) -> keras.Model:
    constructor, minimalistic = _APPLICATIONS[variant]
    return load_keras_application(getattr(keras.applications, constructor), weights, minimalistic=minimalistic)


def build_graph(config: BackboneConfig, variant: str):
    inputs = keras.Input((config.input_size, config.input_size, config.channels), name="image")
    x = rebuild_graph(_tapped(keras_application(variant), MOBILENETV3.tap(config, variant)), inputs)
    if MOBILENETV3.projects(config, variant) or MOBILENETV3.tap(config, variant):
        x = keras.layers.Conv2D(config.feature_dim, 1, use_bias=False, name="feature_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.999, name="feature_bn")(x)
        # The network's own activation: hard-swish, or ReLU in the edge variants (int8-friendly).
        activation = "relu" if variant in EDGE_VARIANTS else "hard_swish"
        x = keras.layers.Activation(activation, name="feature_activation")(x)
    if config.attention:
        x = CBAM(config.cbam_reduction, config.cbam_kernel_size, name="top_cbam")(x)
    x = keras.layers.Identity(name=FEATURE_MAP)(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return inputs, keras.layers.Identity(name=FEATURES)(x)


def transfer(application: keras.Model, backbone: keras.Model) -> None:
    added = [*ADDED, *(layer.name for layer in backbone.layers if isinstance(layer, CBAM))]
    stem = {"conv": lambda values: [grey_kernel(values[0])]} if backbone.stem == "grey" else {}
    tap = MOBILENETV3.tap(backbone.build_config(), backbone.variant)
    # A tapped backbone stops before the network's last stage: those weights have no place in it.
    kept = {layer.name for layer in _tapped(application, tap).layers}
    beyond = [layer.name for layer in application.layers if layer.name not in kept]
    transfer_weights(application, backbone, transforms=stem, skip=added, unused_source=beyond)


def _tapped(application: keras.Model, tap: str | None) -> keras.Model:
    """Keras' network cut at the layer ``tap`` (its output the feature map), or whole for None."""
    if tap is None:
        return application
    return keras.Model(application.input, application.get_layer(tap).output, name=f"{application.name}_{tap}")


MOBILENETV3 = register_backbone(
    BackboneFamily(
        card=backbone_card("mobilenetv3"),
        build_graph=build_graph,
        keras_application=keras_application,
        transfer=transfer,
        native_width={"large": 960, "small": 576, "large_minimal": 960, "small_minimal": 576},
        taps=TAPS,
        summary=(
            "MobileNetV3 (Howard et al. 2019); a 960->768 1x1 conv, then CBAM; 768-d features. "
            "'large_minimal'/'small_minimal': Keras' minimalistic networks (ReLU, no SE, 3x3), "
            "which quantise whole to int8 on XNNPACK, for edge export."
        ),
    )
)
