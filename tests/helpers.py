"""Helpers shared by the tests (import as `from helpers import ...`)."""


def images(rng, batch=2, size=64, channels=1):
    """Raw-pixel images in [0, 255], as every model expects."""
    return (rng.random((batch, size, size, channels)) * 255).astype("float32")
