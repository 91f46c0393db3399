"""The closed sets a run chooses from: how it is built, what its loss is, how pixels are taken.

One owner for each set: the config's schema types its keys with them, and the data and loss
code check and branch on the same members (a StrEnum compares equal to its string).
"""

from __future__ import annotations

from enum import StrEnum


class Style(StrEnum):
    """The three ways the notebook builds and trains the VAE."""

    functional = "functional"
    subclass = "subclass"
    custom_loop = "custom_loop"


class Architecture(StrEnum):
    """How the Keras model is built (and logged): the custom loop trains a subclass model."""

    functional = "functional"
    subclass = "subclass"


class Reconstruction(StrEnum):
    mse = "mse"
    bce = "bce"


class Reduction(StrEnum):
    mean = "mean"
    sum = "sum"


class Binarize(StrEnum):
    """Pixel intensities as they are, Bernoulli pixels drawn anew each epoch, or drawn once."""

    none = "none"
    dynamic = "dynamic"
    static = "static"


class Pruner(StrEnum):
    """What stops a sweep's bad configurations early (Optuna's rule of the same name)."""

    none = "none"
    successive_halving = "successive_halving"
    hyperband = "hyperband"
    median = "median"
