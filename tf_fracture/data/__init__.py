"""Data: reading radiographs, the method's preprocessing, augmentation and tf.data pipelines."""
