"""tf-fracture's edge export, installed as ``tf_fracture_export`` (never a bare ``export``).

* ``tf-fracture export RUN --quantize {float32,float16,dynamic,int8}`` (``python -m tf_fracture_export``):
  the run's model to TFLite, metadata JSON beside it, verified against Keras.
* ``tf-fracture predict MODEL.tflite IMAGE... [--heatmap DIR]`` (``python -m tf_fracture_export.predict``):
  runs the model with the LiteRT interpreter, NumPy and OpenCV only, without TensorFlow, as a phone
  would; ``--heatmap`` also draws each image's class activation map (the model's second output).

Import-light: importing this package loads neither TensorFlow nor LiteRT.
"""
