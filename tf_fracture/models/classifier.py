"""`FractureClassifier`: a backbone followed by one fracture logit, carrying its configuration.

Every model takes raw pixel values in [0, 255] and returns one fracture *logit* (apply a
sigmoid for a probability); the logit layer computes in float32 even under mixed precision.

The classifier's graph is the backbone's graph extended by the head (not a nested backbone
call), so every backbone layer, the ``"feature_map"`` in particular, is reachable from the
classifier's own input: `feature_map_model` gives image -> (feature map, logit) with gradients
that flow, which Grad-CAM needs. (A nested backbone's tensors belong to the inner graph, and
calling it again makes a new node whose map the logit does not depend on.)

The head is a class activation map (CAM, Zhou et al. 2016): a 1x1 convolution (a ``Dense`` on the
last axis) of the feature map gives one logit per position, ``"cam"``, and the logit is its spatial
mean. For a head of pooling + dense this is the same function (the mean of a linear map is the
linear map of the mean), so the CAM is the classifier itself, not a saliency estimate: it is what
guided training supervises, what `cam_model` returns and what the edge export carries. Layers a
family applies after pooling (ConvNeXt's head LayerNorm and projection) run at every position
instead; for ConvNeXt, whose LayerNorm is not linear, that is the one change to the published head.
"""

from __future__ import annotations

import keras

from tf_fracture.backbones import (
    FEATURE_MAP,
    FEATURES,
    Backbone,
    BackboneConfig,
    available_backbones,
    build_backbone,
    build_backbone_from_config,
)
from tf_fracture.backbones.backbone import frozen_layer_names, set_trainable
from tf_fracture.models.saving import as_json_dict
from tf_fracture.validation import check_rate

LOGIT_LAYER = "logit"
CAM_LAYER = "cam"


@keras.saving.register_keras_serializable(package="tf_fracture")
class FractureClassifier(keras.Model):
    """A `Backbone`, optional dropout, and a linear layer that gives one fracture logit.

    Args:
        backbone: a `Backbone` (its layers become this model's: build a new one per classifier).
        dropout: dropout rate before the logit layer (0 for none).
        preprocessing: how the training images were preprocessed (a dict or a dataclass such
            as a preprocessing preset), stored JSON-safe in the model's config; None if unknown.

    Example:
        >>> model = FractureClassifier(Backbone("mobilenetv3", "small"), dropout=0.2)
        >>> model.backbone.family, model.output_shape
        ('mobilenetv3', (None, 1))
    """

    def __init__(self, backbone: Backbone, dropout: float = 0.0, preprocessing=None, **kwargs):
        if not isinstance(backbone, Backbone):
            raise ValueError(
                f"Expected `backbone` to be a tf_fracture Backbone (see build_backbone), but got "
                f"{type(backbone).__name__}."
            )
        check_rate("dropout", dropout)
        preprocessing = as_json_dict(preprocessing)
        x = per_position_head(backbone)
        if dropout:
            x = keras.layers.Dropout(dropout, name="head_dropout")(x)
        cam = keras.layers.Dense(1, name=CAM_LAYER, dtype="float32")(x)
        logit = keras.layers.GlobalAveragePooling2D(name=LOGIT_LAYER, dtype="float32")(cam)
        name = kwargs.pop("name", None) or f"{backbone.name}_classifier"
        trainable = kwargs.pop("trainable", True)
        frozen_layers = kwargs.pop("frozen_layers", ())
        super().__init__(inputs=backbone.input, outputs=logit, name=name, **kwargs)
        set_trainable(self, trainable, frozen_layers)
        self.backbone = backbone
        self.dropout = dropout
        self.preprocessing = preprocessing

    @property
    def feature_map(self) -> keras.KerasTensor:
        """The backbone's last spatial map, a tensor of this model's graph."""
        return self.get_layer(FEATURE_MAP).output

    @property
    def cam(self) -> keras.KerasTensor:
        """The class activation map ``(batch, h, w, 1)`` float32 whose spatial mean is the logit."""
        return self.get_layer(CAM_LAYER).output

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "frozen_layers": frozen_layer_names(self),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "dropout": self.dropout,
            "preprocessing": self.preprocessing,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["backbone"], dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def build_classifier(
    backbone: str | BackboneConfig | Backbone,
    variant: str | None = None,
    *,
    dropout: float = 0.0,
    preprocessing=None,
    **backbone_options,
) -> FractureClassifier:
    """A backbone followed by a linear layer that gives one fracture logit.

    Args:
        backbone: a family name (see `available_backbones()`), a `BackboneConfig`, or a `Backbone`.
        variant: the family's variant when ``backbone`` is a name.
        dropout: dropout rate before the logit layer (0 for none).
        preprocessing: stored in the model (see `FractureClassifier`).
        **backbone_options: `BackboneConfig` fields when ``backbone`` is a name, ``weights``
            (default "imagenet") included.

    Example:
        >>> model = build_classifier("mobilenetv3", weights=None, input_size=224)
        >>> model.output_shape
        (None, 1)
    """
    check_rate("dropout", dropout)
    if isinstance(backbone, str):
        backbone = build_backbone(backbone, variant, **backbone_options)
    elif isinstance(backbone, BackboneConfig):
        backbone = build_backbone_from_config(backbone)
    elif not isinstance(backbone, Backbone):
        raise ValueError(
            f"Expected `backbone` to be a name in {available_backbones()}, a BackboneConfig or a "
            f"Backbone, but got {type(backbone).__name__}."
        )
    elif variant is not None or backbone_options:
        raise ValueError("`variant` and backbone options only apply when `backbone` is a name.")
    return FractureClassifier(backbone, dropout=dropout, preprocessing=preprocessing)


def feature_extractor(model: keras.Model) -> keras.Model:
    """The sub-model of a backbone or classifier from its image input to its ``"features"`` layer."""
    features = pooled_features(model)
    return keras.Model(model.input, features, name=f"{model.name.removesuffix('_classifier')}_features")


def feature_map_model(model: keras.Model) -> keras.Model:
    """image -> ``(feature_map, logit)`` for a classifier, both from one call (Grad-CAM's input).

    Example:
        >>> cam = feature_map_model(classifier)
        >>> with tf.GradientTape() as tape:
        ...     feature_map, logit = cam(image)
        >>> grads = tape.gradient(logit, feature_map)  # (batch, h, w, channels), never None
    """
    if not isinstance(model.output, keras.KerasTensor) or model.output.shape[-1] != 1:
        raise ValueError(f"Expected a classifier with one logit output, but {model.name!r} outputs {model.output}.")
    feature_map = _layer_output(model, FEATURE_MAP)
    return keras.Model(model.input, [feature_map, model.output], name=f"{model.name}_feature_map")


def pooled_features(model: keras.Model) -> keras.KerasTensor:
    """The backbone's pooled ``"features"`` tensor, connected to ``model``'s input (a backbone or a classifier).

    A classifier's logit comes from its CAM, so its own graph does not pass through the pooled
    features; they are still a tensor on its input, through the backbone's graph.
    """
    if isinstance(model, FractureClassifier):
        return model.backbone.get_layer(FEATURES).output
    return _layer_output(model, FEATURES)


def cam_model(model: keras.Model) -> keras.Model:
    """image -> ``(cam, logit)``: the classifier's own class activation map and its logit, from one call.

    ``cam`` is ``(batch, h, w, 1)`` float32 at the feature map's resolution and ``logit`` equals its
    spatial mean. A `FusionModel`, whose head is an MLP on pooled features, has no map of its own:
    built from classifiers, it gives ``(cam of member 1, ..., cam of member n, logit)``, each member's
    map its classifier's own (see `FusionModel.member_cam_model`); built from bare backbones, it is refused.

    Example:
        >>> cams, logits = cam_model(classifier)(images)
        >>> np.allclose(cams.numpy().mean(axis=(1, 2)), logits.numpy(), atol=1e-5)
        True
    """
    if isinstance(model, FractureClassifier) or _has_layer(model, CAM_LAYER):
        return keras.Model(model.input, [_layer_output(model, CAM_LAYER), model.output], name=f"{model.name}_cam")
    if callable(getattr(model, "member_cam_model", None)):
        return model.member_cam_model()
    raise ValueError(
        f"Model {model.name!r} has no class activation map (no layer named {CAM_LAYER!r}); build it with "
        "tf_fracture.models.build_classifier."
    )


def _has_layer(model: keras.Model, name: str) -> bool:
    try:
        model.get_layer(name)
    except ValueError:
        return False
    return True


def per_position_head(backbone: Backbone) -> keras.KerasTensor:
    """The feature map with the layers that follow the backbone's pooling applied at every position.

    Every family pools its ``"feature_map"`` with one ``GlobalAveragePooling2D`` and may apply
    per-vector layers after it (ConvNeXt: LayerNorm, and a Dense projection to another width);
    those act on the last axis, so they run unchanged on the map.
    """
    chain = []
    tensor = backbone.get_layer(FEATURES).output
    while True:
        layer, node_index, _ = tensor._keras_history
        inputs = layer._inbound_nodes[node_index].input_tensors
        if len(inputs) != 1:
            raise ValueError(f"Backbone {backbone.name!r}: layer {layer.name!r} after pooling is not a single chain.")
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            break
        chain.append(layer)
        tensor = inputs[0]
    if inputs[0] is not backbone.feature_map:
        raise ValueError(f"Backbone {backbone.name!r} does not pool its {FEATURE_MAP!r} layer directly.")
    x = backbone.feature_map
    for layer in reversed(chain):
        if not isinstance(layer, keras.layers.Identity):
            x = layer(x)
    return x


def _layer_output(model: keras.Model, name: str):
    try:
        return model.get_layer(name).output
    except ValueError:
        raise ValueError(
            f"Model {model.name!r} has no layer named {name!r}; build it with "
            "tf_fracture.backbones.build_backbone or tf_fracture.models.build_classifier "
            "(a fusion model's feature maps are in its members)."
        ) from None
