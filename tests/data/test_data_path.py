"""The fast data path: parsed pixels come back from the cache without parsing again."""

from keypoints.data import kaggle as data


def test_second_load_reads_the_cache_instead_of_parsing(tiny_data, tmp_path, monkeypatch):
    first = data.read_csv(tiny_data / "training.csv", tmp_path, 96)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def no_parsing(*args):
        raise AssertionError("parsed again although the cache is fresh")

    monkeypatch.setattr(data, "parse_pixels", no_parsing)
    frame, images = data.read_csv(tiny_data / "training.csv", tmp_path, 96)
    assert (images == first[1]).all() and frame.equals(first[0])
    assert list(frame.columns) == list(first[0].columns)
