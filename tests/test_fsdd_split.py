"""FSDD's standard split by recording index: test kept at index 0-4, validation taken from the
train indices."""

from benchmarks.audio_data.fsdd import split_of


def test_split_keeps_fsdd_test_indices_and_takes_validation_from_train():
    assert [split_of(i) for i in (0, 4, 5, 9, 10, 49)] == [
        "test",
        "test",
        "validation",
        "validation",
        "train",
        "train",
    ]
