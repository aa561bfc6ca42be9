"""EfficientNetV2 (S, M) rebuilt for radiographs: greyscale stem, two CBAM blocks, 768-d head.

Built from Keras' own EfficientNetV2 graph (see `surgery`), with:

* a greyscale stem: the stem conv's RGB kernels summed. The built-in rescaling
  (``x / 128 - 1``) treats channels alike, so the sum is exact;
* one CBAM between the last fused-MBConv stage (stage 3) and the first MBConv stage
  (block ``4a``);
* the final 1x1 conv rebuilt with ``feature_dim`` (768) output channels (+BN, SiLU),
  then a second CBAM, then global average pooling.

Reference:
    Tan & Le, "EfficientNetV2: Smaller Models and Faster Training", ICML 2021.
"""

from __future__ import annotations

import keras

from tf_fracture.backbones.config import BackboneConfig
from tf_fracture.backbones.registry import BackboneFamily, register_backbone
from tf_fracture.backbones.surgery import rebuild_graph, with_filters
from tf_fracture.backbones.weights import grey_kernel, load_keras_application, transfer_weights
from tf_fracture.layers import CBAM

_APPLICATIONS = {"s": "EfficientNetV2S", "m": "EfficientNetV2M"}
FIRST_MBCONV = "block4a_expand_conv"  # the first layer of the first MBConv stage, in S and M


def build_efficientnetv2(config: BackboneConfig, variant: str, source: keras.Model | None = None) -> keras.Model:
    if source is None:
        constructor = getattr(keras.applications, _APPLICATIONS[variant])
        source = load_keras_application(constructor, config.weights)
    inputs = keras.Input((config.input_size, config.input_size, config.channels), name="image")

    def cbam(name):
        return lambda: CBAM(config.cbam_reduction, config.cbam_kernel_size, name=name)

    edit = {"top_conv": with_filters(config.feature_dim)} if config.feature_dim is not None else {}
    insert = {FIRST_MBCONV: cbam("fused_mbconv_cbam")} if config.attention else {}
    x = rebuild_graph(source, inputs, edit_config=edit, insert_before=insert)
    if config.attention:
        x = cbam("top_cbam")()(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    features = keras.layers.Identity(name="features")(x)
    model = keras.Model(inputs, features, name=config.model_name(f"efficientnetv2_{variant}"))

    resized = ("top_conv", "top_bn") if config.feature_dim is not None else ()
    added = [layer.name for layer in model.layers if isinstance(layer, CBAM)]
    stem = {"stem_conv": lambda values: [grey_kernel(values[0])]} if config.stem == "grey" else {}
    transfer_weights(source, model, transforms=stem, skip=[*resized, *added])
    return model


EFFICIENTNETV2 = register_backbone(
    BackboneFamily(
        name="efficientnetv2",
        variants=tuple(_APPLICATIONS),
        default_variant="m",
        build=build_efficientnetv2,
        summary="EfficientNetV2 (Tan & Le 2021); CBAM after the fused stages and after the 768-d top conv.",
    )
)
