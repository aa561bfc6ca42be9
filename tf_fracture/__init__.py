"""tf-fracture: fracture detection on radiographs with attention CNNs."""

__version__ = "0.1.0"
