"""The deep-learning backend a process trains on: which it is, its device, seeds, determinism.

Engines are the only layer that imports a framework; this module is where they ask which one
Keras runs on and what device it trains on (one answer, whichever engine asks).
"""

from __future__ import annotations

import contextlib
import logging
import os

import jax
import keras

SUPPORTED_BACKENDS = ("tensorflow", "jax")


def check_backend(style: str) -> str:
    """Refuse a backend/style pair that has no implementation, before any work is done."""
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise RuntimeError(
            f"style={style} is not implemented for KERAS_BACKEND={backend}; use "
            f"KERAS_BACKEND=tensorflow (the default) or KERAS_BACKEND=jax."
        )
    return backend


def device_name() -> str:
    """What trains: "CPU", or "GPU: <its name>" (a run's `device` tag)."""
    if keras.backend.backend() == "jax":
        first = jax.devices()[0]
        return "CPU" if first.platform == "cpu" else f"GPU: {first.device_kind}"
    import tensorflow as tf  # here: a JAX process that trains nothing never pays it (~4 s)

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"GPU: {details.get('device_name', gpus[0].name)}"


class _NotRetracing(logging.Filter):
    """Drop TensorFlow's "excessive retracing" warning; keep its other warnings.

    Each run of a sweep builds a new model, so Keras's functions are traced again by design.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "retracing" not in record.getMessage()


def configure_backend(seed: int, deterministic: bool) -> None:
    """Seed every generator, set determinism and GPU memory sharing."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # here: a JAX process that trains nothing never pays it (~4 s)

        logger = logging.getLogger("tensorflow")
        if not any(isinstance(f, _NotRetracing) for f in logger.filters):
            logger.addFilter(_NotRetracing())
        for gpu in tf.config.list_physical_devices("GPU"):
            # Several runs of a sweep share one card only if none grabs all its memory.
            # RuntimeError: already initialised by an earlier run in this process; keep it.
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(gpu, True)
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        else:
            tf.config.experimental.disable_op_determinism()
    keras.utils.set_random_seed(seed)


def memory_for_training() -> int:
    """Bytes the device that trains can hold: the accelerator's under JAX, else this machine's.

    (TensorFlow grows its GPU memory as runs need it; the machine's memory is what a solo
    run's size check can know before anything is loaded.)
    """
    if keras.backend.backend() == "jax":
        stats = jax.devices()[0].memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"])
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def use_compilation_cache(directory: str) -> None:
    """Keep JAX's compiled programs in `directory`: a later sweep of these shapes reuses them."""
    jax.config.update("jax_compilation_cache_dir", directory)
