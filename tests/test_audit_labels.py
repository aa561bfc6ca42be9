"""Which class is the positive one (`tf_fracture.audit.labels`): names a user's folders would have."""

import pytest

from tf_fracture.audit.labels import binary_label_names, class_kind, match_class, positive_index

KINDS = [
    # FracAtlas, MURA, the elbow set, and the spellings people give their folders.
    ("Fractured", "positive"),
    ("Non_fractured", "negative"),
    ("non-fractured", "negative"),
    ("NonFractured", "negative"),
    ("nonfractured", "negative"),
    ("not_fractured", "negative"),
    ("Not Fractured", "negative"),
    ("no_fracture", "negative"),
    ("nofracture", "negative"),
    ("unfractured", "negative"),
    ("fracture", "positive"),
    ("FRACTURES", "positive"),
    ("1_fractured", "positive"),
    ("positive", "positive"),
    ("Negative", "negative"),
    ("study1_positive", "positive"),
    ("study2_negative", "negative"),
    ("abnormal", "positive"),
    ("Normal", "negative"),
    ("injury", "positive"),
    ("injured", "positive"),
    ("no_injury", "negative"),
    ("uninjured", "negative"),
    ("healthy", "negative"),
    # Neither, or both: not guessed.
    ("cats", None),
    ("class_a", None),
    ("images", None),
    ("fracture_or_normal", None),
    ("", None),
]


@pytest.mark.parametrize("name, kind", KINDS)
def test_class_kind(name, kind):
    assert class_kind(name) == kind


@pytest.mark.parametrize(
    "folders",
    [
        ["Fractured", "Non_fractured"],  # FracAtlas: alphabetical order puts the positive first
        ["Non_fractured", "Fractured"],
        ["fractured", "unknown_folder"],
        ["abnormal", "normal"],
    ],
)
def test_two_classes_put_the_recognised_positive_at_1(folders):
    negative, positive = binary_label_names(folders)
    assert class_kind(positive) == "positive" and negative in folders and negative != positive


def test_named_positive_wins_and_matches_case_insensitively():
    assert binary_label_names(["Fractured", "Non_fractured"], "fractured") == ("Non_fractured", "Fractured")
    assert binary_label_names(["Fractured", "Non_fractured"], "Non_fractured") == ("Fractured", "Non_fractured")
    assert binary_label_names(["cats", "dogs"], "DOGS") == ("cats", "dogs")
    assert match_class(["a", "A"], "A") == 1  # an exact match first
    with pytest.raises(ValueError, match=r"one of \['b', 'B'\]"):
        match_class(["b", "B"], "a")


@pytest.mark.parametrize(
    "folders",
    [["cats", "dogs"], ["normal", "other"], ["fracture", "fractured"], ["positive", "abnormal"]],
)
def test_undecidable_pair_fails_naming_the_folders_and_the_option(folders):
    assert positive_index(folders) is None
    with pytest.raises(ValueError, match="--positive") as error:
        binary_label_names(folders)
    assert all(repr(name) in str(error.value) for name in folders)


def test_positive_index_beyond_two_classes_only_by_name():
    names = ["displaced", "hairline", "normal"]
    assert positive_index(names) is None
    assert positive_index(names, "Hairline") == 1
    with pytest.raises(ValueError, match="positive class"):
        positive_index(names, "fractured")
    with pytest.raises(ValueError, match="two classes"):
        binary_label_names(names)
