"""`Backbone`: a functional feature extractor that carries its build configuration.

Following keras-hub, the class builds a functional graph in ``__init__``, stores every
constructor argument and returns them from ``get_config``, so a saved ``.keras`` file knows
its family, variant, stem, attention, input size and feature width, and reloads with
``keras.saving.load_model(path, safe_mode=True)`` by rebuilding the same graph. Building
never downloads anything: ImageNet weights are a separate step (`load_imagenet_weights`),
so reloading a saved model never tries to fetch them.
"""

from __future__ import annotations

import keras

from tf_fracture.backbones.config import BackboneConfig
from tf_fracture.backbones.registry import FEATURE_MAP, get_family, resolve_variant


@keras.saving.register_keras_serializable(package="tf_fracture")
class Backbone(keras.Model):
    """An image of raw pixels in [0, 255] -> a pooled feature vector, for any registered family.

    The graph has an identity layer named ``"feature_map"`` on the last spatial map before
    pooling (see `feature_map`) and one named ``"features"`` on the output vector.

    Args:
        family: a name from `available_backbones()`.
        variant: the family's variant; None for the method's choice (stored resolved).
        attention: insert CBAM blocks at the method's points.
        stem: ``"grey"`` (1-channel input) or ``"rgb"``.
        feature_dim: the feature width; None or the network's own width keeps the network's
            own head unchanged, any other width adds (or rebuilds) a layer to reach it.
        input_size: square input size in pixels; None accepts any size.
        cbam_reduction: CBAM channel-MLP reduction ratio.
        cbam_kernel_size: CBAM spatial-gate kernel size.
        feature_stride: the feature map's stride; None = the network's own (see `BackboneConfig`).

    The weights are freshly initialised; use `load_imagenet_weights` or
    `load_application_weights` to fill them (or `build_backbone(..., weights="imagenet")`).

    Example:
        >>> backbone = Backbone("mobilenetv3", "small", input_size=224)
        >>> backbone.output_shape, backbone.feature_map.shape
        ((None, 768), (None, 7, 7, 768))
    """

    def __init__(
        self,
        family: str,
        variant: str | None = None,
        *,
        attention: bool = True,
        stem: str = "grey",
        feature_dim: int | None = 768,
        input_size: int | None = None,
        cbam_reduction: int = 16,
        cbam_kernel_size: int = 7,
        feature_stride: int | None = None,
        **kwargs,
    ):
        config = BackboneConfig(
            name=family,
            variant=variant,
            weights=None,
            attention=attention,
            stem=stem,
            feature_dim=feature_dim,
            input_size=input_size,
            cbam_reduction=cbam_reduction,
            cbam_kernel_size=cbam_kernel_size,
            feature_stride=feature_stride,
        )
        variant = resolve_variant(get_family(family), variant)
        get_family(family).tap(config, variant)  # a stride the family does not offer is refused here
        inputs, features = get_family(family).build_graph(config, variant)
        name = kwargs.pop("name", None) or config.model_name(f"{family}_{variant}")
        trainable = kwargs.pop("trainable", True)
        frozen_layers = kwargs.pop("frozen_layers", ())
        super().__init__(inputs=inputs, outputs=features, name=name, **kwargs)
        set_trainable(self, trainable, frozen_layers)
        self.family = family
        self.variant = variant
        self.attention = attention
        self.stem = stem
        self.feature_dim = feature_dim
        self.input_size = input_size
        self.cbam_reduction = cbam_reduction
        self.cbam_kernel_size = cbam_kernel_size
        self.feature_stride = feature_stride

    @property
    def feature_map(self) -> keras.KerasTensor:
        """The last spatial map before pooling, ``(batch, h, w, channels)``, in this model's graph."""
        return self.get_layer(FEATURE_MAP).output

    def build_config(self, weights: str | None = None) -> BackboneConfig:
        """The `BackboneConfig` that rebuilds this backbone (with ``weights`` as given)."""
        return BackboneConfig(
            name=self.family,
            variant=self.variant,
            weights=weights,
            attention=self.attention,
            stem=self.stem,
            feature_dim=self.feature_dim,
            input_size=self.input_size,
            cbam_reduction=self.cbam_reduction,
            cbam_kernel_size=self.cbam_kernel_size,
            feature_stride=self.feature_stride,
        )

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "frozen_layers": frozen_layer_names(self),
            "family": self.family,
            "variant": self.variant,
            "attention": self.attention,
            "stem": self.stem,
            "feature_dim": self.feature_dim,
            "input_size": self.input_size,
            "cbam_reduction": self.cbam_reduction,
            "cbam_kernel_size": self.cbam_kernel_size,
            "feature_stride": self.feature_stride,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def set_trainable(model: keras.Model, trainable: bool, frozen_layers=()) -> None:
    """Sets ``trainable`` on ``model`` and every layer and variable inside it, then freezes ``frozen_layers``.

    Keras' functional constructor sets ``trainable`` before it tracks the graph's layers, so
    ``from_config(trainable=False)`` alone would leave every inner variable trainable.
    ``frozen_layers`` names layers of ``model`` frozen inside a trainable model (see
    `frozen_layer_names`): a model whose config is its constructor's arguments would otherwise
    forget, on reload, which of its layers the user had frozen.
    """
    model.trainable = not trainable
    model.trainable = trainable
    for name in frozen_layers:
        try:
            model.get_layer(name).trainable = False
        except ValueError:
            raise ValueError(f"Cannot freeze layer {name!r}: {model.name!r} has no layer of that name.") from None


def frozen_layer_names(model: keras.Model) -> list[str]:
    """The weighted layers of ``model`` that are frozen while ``model`` itself is trainable (for get_config)."""
    if not model.trainable:
        return []
    return [layer.name for layer in model.layers if layer.weights and not layer.trainable]


def load_application_weights(backbone: Backbone, application: keras.Model) -> Backbone:
    """Fills ``backbone`` from an already-built ``keras.applications`` network of its family and variant.

    The application must be built with ``include_top=False`` on RGB input (ConvNeXt with
    ``pooling="avg"``), e.g. one whose weights you loaded from a local file. Every weight of
    the application must find its place (see `transfer_weights`). Returns ``backbone``.
    """
    _check_backbone(backbone)
    get_family(backbone.family).transfer(application, backbone)
    return backbone


def load_imagenet_weights(backbone: Backbone) -> Backbone:
    """Fills ``backbone`` with Keras' published ImageNet weights (downloaded by Keras on first use).

    Raises `WeightsUnavailableError` with what to do when they cannot be fetched. Returns ``backbone``.
    """
    _check_backbone(backbone)
    family = get_family(backbone.family)
    return load_application_weights(backbone, family.keras_application(backbone.variant, "imagenet"))


def _check_backbone(backbone) -> None:
    if not isinstance(backbone, Backbone):
        raise ValueError(
            f"Expected a tf_fracture Backbone (see build_backbone), but got {type(backbone).__name__}; "
            "a classifier's backbone is `classifier.backbone`."
        )
