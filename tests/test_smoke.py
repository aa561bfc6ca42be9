"""The README's main command: its data path (synthetic_xray -> preprocessing -> augmentation)."""

import numpy as np

from tf_fracture.smoke import synthetic_batch


def test_synthetic_batch_goes_through_the_training_pipeline(tmp_path):
    images, labels = synthetic_batch("mura", str(tmp_path), batch_size=4)
    assert images.shape == (4, 384, 384, 1) and images.dtype.name == "float32"
    values = images.numpy()
    assert 0 <= values.min() and values.max() <= 255 and values.std() > 10
    assert set(np.unique(labels.numpy())) <= {0.0, 1.0}
