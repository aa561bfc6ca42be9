"""`FusionModel`: the members' features, concatenated, through a small MLP to one fracture logit."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import keras

from tf_fracture.backbones import Backbone
from tf_fracture.backbones.backbone import set_trainable
from tf_fracture.models.classifier import LOGIT_LAYER, FractureClassifier
from tf_fracture.models.saving import as_json_dict, load_model
from tf_fracture.validation import check_choice, check_int, check_rate

NORMALISATIONS = ("layer", "batch")


@dataclass(frozen=True)
class FusionConfig:
    """The fusion head: concatenated features -> normalisation -> dropout -> MLP -> logit."""

    hidden_units: tuple[int, ...] = field(default=(256,), metadata={"help": "Widths of the MLP's hidden layers."})
    dropout: float = field(default=0.3, metadata={"help": "Dropout after the normalisation (0.3 in the paper)."})
    normalization: str = field(default="layer", metadata={"help": "'layer' (LayerNorm) or 'batch' (BatchNorm)."})
    activation: str = field(default="relu", metadata={"help": "Activation of the hidden layers."})
    train_backbones: bool = field(
        default=False, metadata={"help": "Train the members too, or freeze them (then they run in inference mode)."}
    )

    def __post_init__(self):
        check_rate("dropout", self.dropout)
        check_choice("normalization", self.normalization, NORMALISATIONS)
        for i, units in enumerate(self.hidden_units):
            check_int(f"hidden_units[{i}]", units)
        check_choice("train_backbones", self.train_backbones, (True, False))


@keras.saving.register_keras_serializable(package="tf_fracture")
class InferenceMode(keras.Model):
    """Runs ``model`` in inference mode whatever the caller's ``training`` flag.

    A frozen fusion member must give the same features in every call while the head trains:
    no dropout or stochastic depth, BatchNorm on its moving statistics. (A functional model
    passes its own ``training`` flag to every layer, overriding ``training=False`` given when
    the graph was built, so the flag has to be fixed by a layer of its own.)

    Args:
        model: the model to run.
    """

    def __init__(self, model: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    def build(self, input_shape):
        self.built = True

    def call(self, x):
        return self.model(x, training=False)

    def compute_output_spec(self, x):
        return self.model.compute_output_spec(x)

    def get_config(self):
        return {**super().get_config(), "model": keras.saving.serialize_keras_object(self.model)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tf_fracture")
class FusionModel(keras.Model):
    """The fusion ensemble: each member backbone's features, concatenated, through an MLP to one logit.

    Frozen members (``train_backbones=False``) are not trained and run in inference mode.

    Args:
        members: at least two `Backbone`s with different names and the same input channels;
            their layers become this model's (`build_fusion` copies them for you).
        hidden_units, dropout, normalization, activation, train_backbones: see `FusionConfig`.
        input_size: the square input size; None accepts any size.
        preprocessing: stored in the model (see `FractureClassifier`).

    Reference:
        The method fuses ConvNeXt, EfficientNetV2 and MobileNetV3, 768-d each: 2304 features.
    """

    def __init__(
        self,
        members: Sequence[Backbone],
        hidden_units: Sequence[int] = (256,),
        dropout: float = 0.3,
        normalization: str = "layer",
        activation: str = "relu",
        train_backbones: bool = False,
        input_size: int | None = None,
        preprocessing=None,
        **kwargs,
    ):
        config = FusionConfig(tuple(hidden_units), dropout, normalization, activation, train_backbones)
        members = _check_members(members)
        preprocessing = as_json_dict(preprocessing)
        for member in members:
            set_trainable(member, train_backbones)
        channels = members[0].input_shape[-1]
        inputs = keras.Input((input_size, input_size, channels), name="image")
        if train_backbones:
            features = [member(inputs) for member in members]
        else:
            features = [InferenceMode(member, name=f"{member.name}_inference")(inputs) for member in members]
        x = keras.layers.Concatenate(name="fused_features")(features)
        if normalization == "layer":
            x = keras.layers.LayerNormalization(name="fusion_norm")(x)
        else:
            x = keras.layers.BatchNormalization(name="fusion_norm")(x)
        x = keras.layers.Dropout(dropout, name="fusion_dropout")(x)
        for i, units in enumerate(config.hidden_units):
            x = keras.layers.Dense(units, activation=activation, name=f"fusion_dense_{i}")(x)
        logit = keras.layers.Dense(1, name=LOGIT_LAYER, dtype="float32")(x)
        trainable = kwargs.pop("trainable", True)
        super().__init__(inputs=inputs, outputs=logit, name=kwargs.pop("name", None) or "fusion", **kwargs)
        set_trainable(self, trainable)
        if trainable:
            for member in members:  # a trainable fusion still keeps frozen members frozen
                set_trainable(member, train_backbones)
        self.members = members
        self.fusion_config = config
        self.input_size = input_size
        self.preprocessing = preprocessing

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "members": [keras.saving.serialize_keras_object(member) for member in self.members],
            **dataclasses.asdict(self.fusion_config),
            "input_size": self.input_size,
            "preprocessing": self.preprocessing,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["members"] = [
            keras.saving.deserialize_keras_object(m) if isinstance(m, dict) else m for m in config["members"]
        ]
        return cls(**config)


def build_fusion(
    members: Sequence[keras.Model | str | os.PathLike],
    config: FusionConfig | None = None,
    *,
    input_size: int | None = None,
    preprocessing=None,
    name: str = "fusion",
) -> FusionModel:
    """The fusion ensemble built from trained single models.

    Args:
        members: classifiers or backbones, or paths to ones saved as ``.keras`` files. Their
            backbones are copied, weights included: training or freezing the fusion leaves the
            members untouched.
        config: the head, and whether the members are trained or frozen.
        input_size: the square input size; None accepts any size.
        preprocessing: stored in the model (see `FractureClassifier`).
        name: the model's name.

    Example:
        >>> members = [build_classifier(n, weights=None) for n in available_backbones()]
        >>> fusion = build_fusion(members)
    """
    config = FusionConfig() if config is None else config
    if isinstance(members, (str, os.PathLike, keras.Model)) or len(members) < 2:
        raise ValueError("`members` must be a sequence of at least two models or .keras paths.")
    backbones = [_copy(_as_backbone(member)) for member in members]
    return FusionModel(
        backbones, **dataclasses.asdict(config), input_size=input_size, preprocessing=preprocessing, name=name
    )


def _check_members(members) -> list[Backbone]:
    members = list(members)
    if len(members) < 2:
        raise ValueError(f"A fusion needs at least two members, but got {len(members)}.")
    for member in members:
        if not isinstance(member, Backbone):
            raise ValueError(f"Expected fusion members to be Backbones, but got {type(member).__name__}.")
    names = [member.name for member in members]
    if len(set(names)) != len(names):
        raise ValueError(f"Fusion members must be different models, but their names repeat: {names}.")
    channels = {member.input_shape[-1] for member in members}
    if len(channels) != 1:
        raise ValueError(f"Fusion members must take the same number of input channels, but take {sorted(channels)}.")
    return members


def _as_backbone(member) -> Backbone:
    if isinstance(member, (str, os.PathLike)):
        member = load_model(member, compile=False)
    if isinstance(member, FractureClassifier):
        return member.backbone
    if isinstance(member, Backbone):
        return member
    raise ValueError(
        "Expected a fusion member to be a FractureClassifier, a Backbone or a .keras path to one, "
        f"but got {type(member).__name__} {getattr(member, 'name', '')!r}."
    )


def _copy(backbone: Backbone) -> Backbone:
    copy = Backbone.from_config(backbone.get_config())
    copy.set_weights(backbone.get_weights())
    return copy
