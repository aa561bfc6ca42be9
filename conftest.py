"""Repository-wide pytest configuration."""


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase (the base of TFDS' DatasetBuilderTestCase) defines `test_session`, a
    # context manager that pytest collects as a test and then skips: drop it, it tests nothing.
    items[:] = [item for item in items if item.name != "test_session"]
