"""FracAtlas builder on a tiny fake tree with planted problems (see dummy_data_generation.py)."""

import tensorflow_datasets as tfds

from tf_fracture_datasets.fracatlas import fracatlas_dataset_builder


class FracAtlasTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = fracatlas_dataset_builder.Builder
    SPLITS = {"train": 16, "validation": 2, "test": 2}
    SKIP_CHECKSUMS = True

    def test_exclusions_and_grouping(self):
        builder = self._make_builder()
        dl_config = tfds.download.DownloadConfig(manual_dir=str(self.dummy_data))
        builder.download_and_prepare(download_config=dl_config)
        excluded = builder.info.metadata["excluded"]
        self.assertEqual(
            sorted(excluded),
            [
                "dataset.csv:IMG0000099.jpg",
                "images/Fractured/IMG0000044.jpg",
                "images/Fractured/IMG0000050.jpg",
                "images/Non_fractured/IMG0000001.jpg",
                "images/Non_fractured/IMG0000003.jpg",
                "images/Non_fractured/IMG0000004.jpg",
            ],
        )
        self.assertIn("another label", excluded["images/Fractured/IMG0000044.jpg"])
        self.assertIn("unreadable", excluded["images/Non_fractured/IMG0000004.jpg"])
        split_of = {}
        for split in ("train", "validation", "test"):
            for example in tfds.as_numpy(builder.as_dataset(split=split)):
                name = example["filename"].decode()
                self.assertNotIn(name, split_of, "an image is in two splits")
                split_of[name] = split
        self.assertEqual(
            split_of["images/Non_fractured/IMG0000006.jpg"], split_of["images/Non_fractured/IMG0000007.jpg"]
        )
        self.assertEqual(sum(1 for k in split_of if "Fractured/" in k and "Non_" not in k), 5)


if __name__ == "__main__":
    tfds.testing.test_main()
