"""EfficientNetV2 (S, M) rebuilt for radiographs: greyscale stem, two CBAM blocks, 768-d head.

Built from Keras' own EfficientNetV2 graph (see `surgery`), with:

* a greyscale stem: the stem conv's RGB kernels summed. The built-in rescaling
  (``x / 128 - 1``) treats channels alike, so the sum is exact;
* one CBAM between the last fused-MBConv stage (stage 3) and the first MBConv stage
  (block ``4a``);
* the final 1x1 conv rebuilt with ``feature_dim`` (768) output channels (+BN, SiLU) when
  that differs from the network's own 1280 (then freshly initialised), then a second CBAM,
  then global average pooling.

Reference:
    Tan & Le, "EfficientNetV2: Smaller Models and Faster Training", ICML 2021.
"""

from __future__ import annotations

import keras

from tf_fracture.backbones.config import BackboneConfig
from tf_fracture.backbones.registry import FEATURE_MAP, FEATURES, BackboneFamily, register_backbone
from tf_fracture.backbones.surgery import rebuild_graph, with_filters
from tf_fracture.backbones.weights import grey_kernel, load_keras_application, transfer_weights
from tf_fracture.configs.backbones import backbone_card
from tf_fracture.layers import CBAM

_APPLICATIONS = {"s": "EfficientNetV2S", "m": "EfficientNetV2M"}
FIRST_MBCONV = "block4a_expand_conv"  # the first layer of the first MBConv stage, in S and M
TOP = ("top_conv", "top_bn")  # rebuilt (and re-initialised) when feature_dim differs from 1280


def keras_application(variant: str, weights: str | None = None) -> keras.Model:
    return load_keras_application(getattr(keras.applications, _APPLICATIONS[variant]), weights)


def build_graph(config: BackboneConfig, variant: str):
    inputs = keras.Input((config.input_size, config.input_size, config.channels), name="image")

    def cbam(name):
        return lambda: CBAM(config.cbam_reduction, config.cbam_kernel_size, name=name)

    edit = {"top_conv": with_filters(config.feature_dim)} if EFFICIENTNETV2.projects(config, variant) else {}
    insert = {FIRST_MBCONV: cbam("fused_mbconv_cbam")} if config.attention else {}
    x = rebuild_graph(keras_application(variant), inputs, edit_config=edit, insert_before=insert)
    if config.attention:
        x = cbam("top_cbam")()(x)
    x = keras.layers.Identity(name=FEATURE_MAP)(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return inputs, keras.layers.Identity(name=FEATURES)(x)


def transfer(application: keras.Model, backbone: keras.Model) -> None:
    resized = TOP if backbone.get_layer("top_conv").filters != application.get_layer("top_conv").filters else ()
    added = [layer.name for layer in backbone.layers if isinstance(layer, CBAM)]
    stem = {"stem_conv": lambda values: [grey_kernel(values[0])]} if backbone.stem == "grey" else {}
    transfer_weights(application, backbone, transforms=stem, skip=[*resized, *added], unused_source=resized)


EFFICIENTNETV2 = register_backbone(
    BackboneFamily(
        card=backbone_card("efficientnetv2"),
        build_graph=build_graph,
        keras_application=keras_application,
        transfer=transfer,
        native_width={"s": 1280, "m": 1280},
        summary="EfficientNetV2 (Tan & Le 2021); CBAM after the fused stages and after the 768-d top conv.",
    )
)
