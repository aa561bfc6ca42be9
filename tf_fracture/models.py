"""Classifiers and the fusion ensemble built on the backbones.

Every model takes raw pixel values in [0, 255] and returns one fracture *logit* (apply a
sigmoid for a probability); the logit layer computes in float32 even under mixed precision.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import keras

import tf_fracture.layers  # noqa: F401  (registers the custom layers for load_model)
from tf_fracture.backbones import BackboneConfig, available_backbones, build_backbone, build_backbone_from_config

FEATURES_LAYER = "features"
LOGIT_LAYER = "logit"
NORMALISATIONS = ("layer", "batch")


def build_classifier(
    backbone: str | BackboneConfig | keras.Model,
    variant: str | None = None,
    *,
    dropout: float = 0.0,
    **backbone_options,
) -> keras.Model:
    """A backbone followed by a linear layer that gives one fracture logit.

    Args:
        backbone: a family name (see `available_backbones()`), a `BackboneConfig`, or a
            backbone model whose feature layer is named ``"features"``.
        variant: the family's variant when ``backbone`` is a name.
        dropout: dropout rate before the logit layer (0 for none).
        **backbone_options: `BackboneConfig` fields when ``backbone`` is a name.

    Example:
        >>> model = build_classifier("mobilenetv3", weights=None, input_size=224)
        >>> model.output_shape
        (None, 1)
    """
    _check_rate("dropout", dropout)
    if isinstance(backbone, str):
        backbone = build_backbone(backbone, variant, **backbone_options)
    elif isinstance(backbone, BackboneConfig):
        backbone = build_backbone_from_config(backbone)
    elif not isinstance(backbone, keras.Model):
        raise ValueError(
            f"Expected `backbone` to be a name in {available_backbones()}, a BackboneConfig or a "
            f"keras.Model, but got {type(backbone).__name__}."
        )
    elif variant is not None or backbone_options:
        raise ValueError("`variant` and backbone options only apply when `backbone` is a name.")
    x = _features_tensor(backbone)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logit = keras.layers.Dense(1, name=LOGIT_LAYER, dtype="float32")(x)
    return keras.Model(backbone.input, logit, name=f"{backbone.name}_classifier")


def feature_extractor(model: keras.Model) -> keras.Model:
    """The sub-model of a backbone or classifier from its image input to its ``"features"`` layer."""
    features = _features_tensor(model)
    return keras.Model(model.input, features, name=f"{model.name.removesuffix('_classifier')}_features")


@dataclass(frozen=True)
class FusionConfig:
    """The fusion head: concatenated features -> normalisation -> dropout -> MLP -> logit."""

    hidden_units: tuple[int, ...] = field(default=(256,), metadata={"help": "Widths of the MLP's hidden layers."})
    dropout: float = field(default=0.3, metadata={"help": "Dropout after the normalisation (0.3 in the paper)."})
    normalization: str = field(default="layer", metadata={"help": "'layer' (LayerNorm) or 'batch' (BatchNorm)."})
    activation: str = field(default="relu", metadata={"help": "Activation of the hidden layers."})
    train_backbones: bool = field(default=False, metadata={"help": "Train the members too, or freeze them."})

    def __post_init__(self):
        _check_rate("dropout", self.dropout)
        if self.normalization not in NORMALISATIONS:
            raise ValueError(
                f"Expected `normalization` to be one of {NORMALISATIONS}, "
                f"but got `normalization={self.normalization!r}`."
            )
        if any(isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in self.hidden_units):
            raise ValueError(f"Expected `hidden_units` to be positive integers, but got {self.hidden_units!r}.")


def build_fusion(
    members: Sequence[keras.Model | str | os.PathLike],
    config: FusionConfig | None = None,
    *,
    input_size: int | None = None,
    name: str = "fusion",
) -> keras.Model:
    """The fusion ensemble: each member's features, concatenated, through a small MLP to one logit.

    Args:
        members: classifiers or backbones (each with a ``"features"`` layer), or paths to
            ones saved as ``.keras`` files. Their feature extractors are copied, weights
            included: training or freezing the fusion leaves the members untouched. The
            method fuses ConvNeXt, EfficientNetV2 and MobileNetV3, 768-d each: 2304 features.
        config: the head, and whether the members are trained or frozen.
        input_size: the square input size; None accepts any size.
        name: the model's name.

    Example:
        >>> members = [build_classifier(n, weights=None) for n in available_backbones()]
        >>> fusion = build_fusion(members)
    """
    config = FusionConfig() if config is None else config
    if isinstance(members, (str, os.PathLike, keras.Model)) or len(members) < 2:
        raise ValueError("`members` must be a sequence of at least two models or .keras paths.")
    extractors = [_copy(feature_extractor(_as_model(member))) for member in members]
    names = [extractor.name for extractor in extractors]
    if len(set(names)) != len(names):
        raise ValueError(f"Fusion members must be different models, but their names repeat: {names}.")
    channels = {extractor.input_shape[-1] for extractor in extractors}
    if len(channels) != 1:
        raise ValueError(f"Fusion members must take the same number of input channels, but take {sorted(channels)}.")
    for extractor in extractors:
        extractor.trainable = config.train_backbones

    inputs = keras.Input((input_size, input_size, channels.pop()), name="image")
    x = keras.layers.Concatenate(name="fused_features")([extractor(inputs) for extractor in extractors])
    if config.normalization == "layer":
        x = keras.layers.LayerNormalization(name="fusion_norm")(x)
    else:
        x = keras.layers.BatchNormalization(name="fusion_norm")(x)
    x = keras.layers.Dropout(config.dropout, name="fusion_dropout")(x)
    for i, units in enumerate(config.hidden_units):
        x = keras.layers.Dense(units, activation=config.activation, name=f"fusion_dense_{i}")(x)
    logit = keras.layers.Dense(1, name=LOGIT_LAYER, dtype="float32")(x)
    return keras.Model(inputs, logit, name=name)


def load_model(path: str | os.PathLike, compile: bool = True) -> keras.Model:
    """Loads a model saved with ``model.save("....keras")`` (safe mode, no custom objects needed)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No saved model at {path!r}: expected a file written by model.save('....keras').")
    if not path.endswith(".keras"):
        raise ValueError(f"Expected a Keras v3 '.keras' file, but got {path!r}.")
    return keras.saving.load_model(path, compile=compile, safe_mode=True)


def _as_model(member) -> keras.Model:
    if isinstance(member, keras.Model):
        return member
    if isinstance(member, (str, os.PathLike)):
        return load_model(member, compile=False)
    raise ValueError(f"Expected a fusion member to be a keras.Model or a .keras path, but got {type(member).__name__}.")


def _copy(model: keras.Model) -> keras.Model:
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _features_tensor(model: keras.Model):
    try:
        return model.get_layer(FEATURES_LAYER).output
    except ValueError:
        raise ValueError(
            f"Model {model.name!r} has no layer named {FEATURES_LAYER!r}; build it with "
            "tf_fracture.backbones.build_backbone or tf_fracture.models.build_classifier."
        ) from None


def _check_rate(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"Expected `{name}` in [0, 1), but got `{name}={value!r}`.")
