"""Every custom layer through the shared harness (tests/harness.py).

A new layer gets its line in LAYER_CASES; its maths is tested in its own module
(e.g. tests/test_cbam.py against NumPy).
"""

import harness
import numpy as np
import pytest

from tf_fracture.data.augment import RandomAffine
from tf_fracture.layers import CBAM, ChannelGate, LayerScale, SpatialGate

FEATURES = (2, 6, 5, 16)  # batch, height, width, channels: not square, so a swapped axis shows
IMAGES = (2, 16, 16, 1)

# layer class, constructor arguments, input shape, (trainable, non-trainable) weight counts, options
LAYER_CASES = [
    (ChannelGate, {"reduction": 4}, FEATURES, (4, 0), {}),
    (SpatialGate, {"kernel_size": 3}, FEATURES, (3, 2), {}),
    (CBAM, {"reduction": 4, "kernel_size": 3}, FEATURES, (7, 2), {}),
    (LayerScale, {"init_value": 0.1}, FEATURES, (1, 0), {}),
    # An augmentation: the identity in inference mode, no weights; its float16 output is the
    # autocast input, so the mixed-precision check holds too.
    (RandomAffine, {"seed": 3}, IMAGES, (0, 0), {"inference_is_identity": True}),
]


@pytest.mark.parametrize(
    "layer_cls, kwargs, shape, counts, options", LAYER_CASES, ids=[case[0].__name__ for case in LAYER_CASES]
)
def test_layer(layer_cls, kwargs, shape, counts, options, tmp_path):
    data = np.random.default_rng(0).uniform(0.0, 1.0, shape).astype("float32")
    harness.run_layer_test(
        layer_cls,
        kwargs,
        data,
        expected_output_shape=shape,
        directory=tmp_path,
        expected_num_trainable_weights=counts[0],
        expected_num_non_trainable_weights=counts[1],
        **options,
    )
