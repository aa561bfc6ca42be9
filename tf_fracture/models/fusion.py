"""`FusionModel`: the members' features, concatenated, through a small MLP to one fracture logit."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import keras

from tf_fracture.backbones import Backbone
from tf_fracture.backbones.backbone import set_trainable
from tf_fracture.models.classifier import CAM_LAYER, LOGIT_LAYER, FractureClassifier, per_position_head
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

    The fusion's logit comes from an MLP on pooled features, so it has no class activation map of its
    own. A fusion built from classifiers keeps each member classifier's CAM head (its 1x1 conv, frozen):
    `member_cams` gives one CAM per member, the map whose spatial mean is that member classifier's
    own logit (see `tf_fracture.models.cam_model`).

    Args:
        members: at least two `Backbone`s with different names and the same input channels;
            their layers become this model's (`build_fusion` copies them for you).
        hidden_units, dropout, normalization, activation, train_backbones: see `FusionConfig`.
        input_size: the square input size; None accepts any size.
        preprocessing: stored in the model (see `FractureClassifier`).
        member_cams: keep a CAM head per member (`build_fusion` sets it, and copies the heads' weights,
            when every member comes from a classifier).

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
        member_cams: bool = False,
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
        # Not in the fusion's graph (its logit does not use them): built on each member's per-position
        # features, frozen, and saved with the model as its attribute.
        self.member_cam_heads = [_cam_head(member) for member in members] if member_cams else []

    @property
    def member_cams(self) -> bool:
        """Whether the fusion carries one CAM head per member (see `member_cam_model`)."""
        return bool(self.member_cam_heads)

    def member_cam_model(self) -> keras.Model:
        """image -> ``[cam of member 1, ..., cam of member n, fusion logit]``, each CAM ``(B, h, w, 1)`` float32.

        Each member's CAM is its classifier's own: its spatial mean is the member's logit (not the
        fusion's, which an MLP makes from all members' pooled features). Members run in inference mode.

        Raises:
            ValueError: for a fusion built from bare backbones (no CAM heads).
        """
        if not self.member_cams:
            raise ValueError(
                f"{self.name!r} is a fusion model built from bare backbones: its members have no CAM head and its "
                "logit comes from an MLP on pooled features, not from a map. Build the fusion from classifiers "
                "(build_fusion with classifiers or their run folders) to get one CAM per member."
            )
        image = keras.Input(self.input_shape[1:], name="image")
        cams = []
        for member, head in zip(self.members, self.member_cam_heads, strict=True):
            cam = keras.Model(member.input, head(per_position_head(member)), name=f"{member.name}_{CAM_LAYER}")
            cams.append(InferenceMode(cam, name=f"{member.name}_{CAM_LAYER}_inference")(image))
        logit = InferenceMode(self, name=f"{self.name}_inference")(image)
        return keras.Model(image, [*cams, logit], name=f"{self.name}_member_cams")

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "members": [keras.saving.serialize_keras_object(member) for member in self.members],
            **dataclasses.asdict(self.fusion_config),
            "input_size": self.input_size,
            "preprocessing": self.preprocessing,
            "member_cams": self.member_cams,
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
    loaded = [load_model(m, compile=False) if isinstance(m, (str, os.PathLike)) else m for m in members]
    backbones = [_copy(_as_backbone(member)) for member in loaded]
    heads = [_classifier_cam_head(member) for member in loaded]
    member_cams = all(head is not None for head in heads)
    fusion = FusionModel(
        backbones,
        **dataclasses.asdict(config),
        input_size=input_size,
        preprocessing=preprocessing,
        name=name,
        member_cams=member_cams,
    )
    if member_cams:
        for own, theirs in zip(fusion.member_cam_heads, heads, strict=True):
            own.set_weights(theirs.get_weights())
    return fusion


def _cam_head(member: Backbone) -> keras.layers.Dense:
    """A frozen 1x1 conv on ``member``'s per-position features, laid out as a classifier's ``"cam"`` layer."""
    head = keras.layers.Dense(1, name=f"{member.name}_{CAM_LAYER}", dtype="float32", trainable=False)
    head.build((None, member.output_shape[-1]))  # the per-position features are as wide as the pooled ones
    return head


def _classifier_cam_head(member) -> keras.layers.Dense | None:
    """A classifier's CAM layer (the multi-task model's: its classifier's), or None for a bare backbone."""
    member = getattr(member, "classifier", member)
    if isinstance(member, FractureClassifier):
        return member.get_layer(CAM_LAYER)
    return None


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
    member = getattr(member, "classifier", member)  # a multi-task model's classifier
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
