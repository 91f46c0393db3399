"""The notebook's dense VAE, built with the functional API or as Layer/Model subclasses.

Both builders return a Keras Model with the `VAEObjective` mixin: the objective lives in
`compute_loss`, which Keras calls on every backend (TensorFlow and JAX alike), instead of the
notebook's `add_loss` on symbolic tensors, which Keras 3 refuses. The model owns its metric
trackers, so `fit`, `evaluate` and the custom loop report the same three numbers under the
same names.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import layers, ops

from vaelab.vae.losses import LossSpec, vae_loss_terms
from vaelab.vocab.choices import Architecture
from vaelab.vocab.metrics import TERMS

# The five Dense layers, by the name each has in the functional style; the position in this
# tuple seeds each layer's initial weights.
DENSE_NAMES = ("encoder_hidden", "z_mean", "z_log_var", "decoder_hidden", "reconstruction")


@keras.saving.register_keras_serializable(package="vaelab")
class SeededGlorotUniform(keras.initializers.Initializer):
    """Glorot-uniform weights drawn by numpy from (seed, layer).

    The same numbers on every backend, in both styles, whatever order the layers are built in:
    Keras's own initializers draw from the backend's generator, so the same seed gives other
    weights on TensorFlow and JAX, and in the two styles (their layers built in other orders).
    Drawing in numpy also costs no compilation on JAX.
    """

    def __init__(self, seed: int | None, layer: int):
        self.seed, self.layer = seed, layer

    def __call__(self, shape, dtype=None):
        return ops.convert_to_tensor(
            glorot_uniform(tuple(shape), self.seed, self.layer), dtype=dtype
        )

    def get_config(self) -> dict:
        return {"seed": self.seed, "layer": self.layer}


def glorot_uniform(shape: tuple[int, ...], seed: int | None, layer: int) -> np.ndarray:
    fan_in, fan_out = shape[0], shape[-1]
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    rng = np.random.default_rng(None if seed is None else [seed, layer])
    return rng.uniform(-limit, limit, size=shape).astype("float32")


def initial_dense_weights(
    input_dim: int, intermediate_dim: int, latent_dim: int, seed: int
) -> list[np.ndarray]:
    """What `dense_weights` reads from a model `build_vae` just built, without building it.

    A packed member's model is built only if it finishes: most of a pruned sweep's never do.
    """
    h, z = intermediate_dim, latent_dim
    kernels = [(input_dim, h), (h, z), (h, z), (z, h), (h, input_dim)]  # DENSE_NAMES order
    weights = []
    for layer, shape in enumerate(kernels):
        weights += [glorot_uniform(shape, seed, layer), np.zeros(shape[1], np.float32)]
    return weights


def dense(units: int, role: str, seed: int | None, **kwargs) -> layers.Dense:
    """One of the five Dense layers, its weights seeded by its role (one of DENSE_NAMES)."""
    initializer = SeededGlorotUniform(seed, DENSE_NAMES.index(role))
    return layers.Dense(units, kernel_initializer=initializer, **kwargs)


@keras.saving.register_keras_serializable(package="vaelab")
class Sampling(layers.Layer):
    """Reparameterisation: z = mean + sigma * eps, with eps drawn from a seeded generator."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}


class VAEObjective:
    """What every style shares: the loss terms and their trackers.

    A mixin rather than a Model base class: Keras turns a functional subclass into a
    `Functional` by rewriting its base classes, which must not leak into the subclass style.
    """

    def _init_objective(self) -> None:
        self.loss_spec: LossSpec | None = None
        self.trackers = {name: keras.metrics.Mean(name=name) for name in TERMS}

    def set_objective(self, spec: LossSpec) -> None:
        """Choose the loss; kept out of the constructor so a saved model loads without it."""
        self.loss_spec = spec

    @property
    def metrics(self) -> list:
        return list(self.trackers.values())

    def loss_terms(self, x, outputs) -> dict:
        if self.loss_spec is None:
            raise RuntimeError("the model has no objective: call set_objective(LossSpec(...))")
        return vae_loss_terms(
            x,
            outputs["reconstruction"],
            outputs["z_mean"],
            outputs["z_log_var"],
            self.loss_spec.weights(),
        )

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        terms = self.loss_terms(x, y_pred)
        batch_size = ops.cast(ops.shape(x)[0], "float32")
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name], sample_weight=batch_size)
        return terms["total"]

    @property
    def encoder(self):
        return self.get_layer("encoder")

    @property
    def decoder(self):
        return self.get_layer("decoder")


@keras.saving.register_keras_serializable(package="vaelab")
class FunctionalVAE(VAEObjective, keras.Model):
    """A functional graph (inputs -> outputs) that keeps the shared objective."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_objective()


def build_functional_vae(
    input_dim: int, intermediate_dim: int, latent_dim: int, seed: int | None
) -> keras.Model:
    """The notebook's functional cell: an encoder Model and a decoder Model, chained."""
    pixels = keras.Input(shape=(input_dim,), name="pixels")
    hidden = dense(
        intermediate_dim, "encoder_hidden", seed, activation="relu", name="encoder_hidden"
    )(pixels)
    z_mean = dense(latent_dim, "z_mean", seed, name="z_mean")(hidden)
    z_log_var = dense(latent_dim, "z_log_var", seed, name="z_log_var")(hidden)
    z = Sampling(seed=seed, name="sampling")([z_mean, z_log_var])
    encoder = keras.Model(pixels, [z_mean, z_log_var, z], name="encoder")

    latent = keras.Input(shape=(latent_dim,), name="z")
    hidden = dense(
        intermediate_dim, "decoder_hidden", seed, activation="relu", name="decoder_hidden"
    )(latent)
    reconstruction = dense(
        input_dim, "reconstruction", seed, activation="sigmoid", name="reconstruction"
    )(hidden)
    decoder = keras.Model(latent, reconstruction, name="decoder")

    inputs = keras.Input(shape=(input_dim,), name="pixels")
    z_mean, z_log_var, z = encoder(inputs)
    outputs = {"reconstruction": decoder(z), "z_mean": z_mean, "z_log_var": z_log_var}
    return FunctionalVAE(inputs=inputs, outputs=outputs, name="vae_functional")


@keras.saving.register_keras_serializable(package="vaelab")
class Encoder(layers.Layer):
    """Maps pixels to (z_mean, z_log_var, z)."""

    def __init__(self, latent_dim: int, intermediate_dim: int, seed: int | None, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.intermediate_dim, self.seed = latent_dim, intermediate_dim, seed
        self.dense_proj = dense(intermediate_dim, "encoder_hidden", seed, activation="relu")
        self.dense_mean = dense(latent_dim, "z_mean", seed)
        self.dense_log_var = dense(latent_dim, "z_log_var", seed)
        self.sampling = Sampling(seed=seed)

    def build(self, input_shape):
        self.dense_proj.build(input_shape)
        hidden_shape = (input_shape[0], self.intermediate_dim)
        self.dense_mean.build(hidden_shape)
        self.dense_log_var.build(hidden_shape)

    def call(self, inputs):
        hidden = self.dense_proj(inputs)
        z_mean, z_log_var = self.dense_mean(hidden), self.dense_log_var(hidden)
        return z_mean, z_log_var, self.sampling((z_mean, z_log_var))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "intermediate_dim": self.intermediate_dim,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="vaelab")
class Decoder(layers.Layer):
    """Maps z back to pixel intensities in [0, 1]."""

    def __init__(self, original_dim: int, intermediate_dim: int, seed: int | None, **kwargs):
        super().__init__(**kwargs)
        self.original_dim, self.intermediate_dim, self.seed = original_dim, intermediate_dim, seed
        self.dense_proj = dense(intermediate_dim, "decoder_hidden", seed, activation="relu")
        self.dense_output = dense(original_dim, "reconstruction", seed, activation="sigmoid")

    def build(self, input_shape):
        self.dense_proj.build(input_shape)
        self.dense_output.build((input_shape[0], self.intermediate_dim))

    def call(self, inputs):
        return self.dense_output(self.dense_proj(inputs))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "original_dim": self.original_dim,
            "intermediate_dim": self.intermediate_dim,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="vaelab")
class SubclassVAE(VAEObjective, keras.Model):
    """The notebook's subclass cell: Encoder and Decoder layers inside a Model."""

    def __init__(
        self,
        original_dim: int,
        intermediate_dim: int,
        latent_dim: int,
        seed: int | None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.original_dim, self.intermediate_dim = original_dim, intermediate_dim
        self.latent_dim, self.seed = latent_dim, seed
        self._encoder = Encoder(latent_dim, intermediate_dim, seed=seed, name="encoder")
        self._decoder = Decoder(original_dim, intermediate_dim, seed, name="decoder")
        self._init_objective()

    def build(self, input_shape):
        self._encoder.build(input_shape)
        self._decoder.build((input_shape[0], self.latent_dim))

    def call(self, inputs, training=None):
        z_mean, z_log_var, z = self._encoder(inputs)
        return {"reconstruction": self._decoder(z), "z_mean": z_mean, "z_log_var": z_log_var}

    @property
    def encoder(self):
        return self._encoder

    @property
    def decoder(self):
        return self._decoder

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "original_dim": self.original_dim,
            "intermediate_dim": self.intermediate_dim,
            "latent_dim": self.latent_dim,
            "seed": self.seed,
        }


def build_subclass_vae(
    input_dim: int, intermediate_dim: int, latent_dim: int, seed: int | None
) -> keras.Model:
    model = SubclassVAE(input_dim, intermediate_dim, latent_dim, seed=seed, name="vae_subclass")
    model.build((None, input_dim))
    return model


BUILDERS = {
    Architecture.functional: build_functional_vae,
    Architecture.subclass: build_subclass_vae,
}


def build_vae(
    architecture: Architecture, input_dim: int, intermediate_dim: int, latent_dim: int,
    seed: int, loss_spec: LossSpec,
) -> keras.Model:  # fmt: skip
    """Build the VAE the named way ("functional" or "subclass") with its objective set."""
    model = BUILDERS[architecture](input_dim, intermediate_dim, latent_dim, seed)
    model.set_objective(loss_spec)
    return model


def dense_layers(model: keras.Model) -> list[layers.Dense]:
    """The five Dense layers of either architecture, in the order of DENSE_NAMES.

    The two styles differ only in how these are wired, so weights move between them (and
    into a packed sweep) through this list.
    """
    if isinstance(model, SubclassVAE):
        e, d = model.encoder, model.decoder
        return [e.dense_proj, e.dense_mean, e.dense_log_var, d.dense_proj, d.dense_output]
    encoder, decoder = model.encoder, model.decoder
    return [encoder.get_layer(n) for n in ("encoder_hidden", "z_mean", "z_log_var")] + [
        decoder.get_layer(n) for n in ("decoder_hidden", "reconstruction")
    ]


def dense_weights(model: keras.Model) -> list:
    """Kernel and bias of each layer of `dense_layers`, as numpy arrays (10 in all)."""
    return [
        ops.convert_to_numpy(w) for layer in dense_layers(model) for w in (layer.kernel, layer.bias)
    ]


def set_dense_weights(model: keras.Model, weights: list) -> None:
    for index, layer in enumerate(dense_layers(model)):
        layer.kernel.assign(weights[2 * index])
        layer.bias.assign(weights[2 * index + 1])


def reseed(model: keras.Model, seed: int) -> None:
    """Give a built model the initial state a new model with this seed would have.

    Exactly what `build_vae(..., seed)` would draw: the weights, the sampling generator's
    state and the seed every layer reports in its config. A sweep then reuses one model per
    architecture and size, and Keras's compiled training step with it, instead of tracing
    and compiling a new one for every run.
    """
    dense = dense_layers(model)
    (input_dim, hidden), latent = dense[0].kernel.shape, dense[1].kernel.shape[1]
    set_dense_weights(model, initial_dense_weights(input_dim, hidden, latent, seed))
    for layer in dense:
        layer.kernel_initializer.seed = seed
    for layer in model._flatten_layers(include_self=True):  # noqa: SLF001 - every sublayer
        if isinstance(layer, Sampling):
            layer.seed = seed
            state = layer.seed_generator.state
            state.assign(np.array([seed, 0]).astype(state.dtype))
        if hasattr(layer, "seed"):
            layer.seed = seed


def portable(model: keras.Model) -> keras.Model:
    """The trained VAE as a plain Keras model that loads where vaelab was never imported.

    Keras loads a custom class only if its module was imported first, so a vaelab class would
    not load in a fresh Python. This one is Keras's own layers with the same weights: `encoder`
    (pixels -> z_mean, z_log_var) and `decoder` (z -> pixels) sub-models, and one output, the
    decoded mean (the random draw of `Sampling` belongs to training): one array is what
    MLflow's pyfunc and a served model can return (a dict comes back as an object array).
    """
    kernels = [layer.kernel for layer in dense_layers(model)]
    input_dim, intermediate_dim = kernels[0].shape
    latent_dim = kernels[1].shape[1]
    # Zeros, not Keras's random default: every weight is set from `model` below, and on JAX
    # a random initialiser compiles a program per kernel shape (12 for sweep=grid, 12 s).
    dense = functools.partial(layers.Dense, kernel_initializer="zeros")
    pixels = keras.Input(shape=(input_dim,), name="pixels")
    hidden = dense(intermediate_dim, activation="relu", name="encoder_hidden")(pixels)
    encoding = [dense(latent_dim, name=n)(hidden) for n in ("z_mean", "z_log_var")]
    encoder = keras.Model(pixels, encoding, name="encoder")
    z = keras.Input(shape=(latent_dim,), name="z")
    hidden = dense(intermediate_dim, activation="relu", name="decoder_hidden")(z)
    pixels_out = dense(input_dim, activation="sigmoid", name="reconstruction")(hidden)
    decoder = keras.Model(z, pixels_out, name="decoder")
    inputs = keras.Input(shape=(input_dim,), name="pixels")
    z_mean, _ = encoder(inputs)
    plain = keras.Model(inputs, decoder(z_mean), name=model.name)
    dense = [encoder.get_layer(n) for n in DENSE_NAMES[:3]]
    dense += [decoder.get_layer(n) for n in DENSE_NAMES[3:]]
    for target, source in zip(dense, dense_layers(model), strict=True):
        target.set_weights([ops.convert_to_numpy(source.kernel), ops.convert_to_numpy(source.bias)])
    return plain


def warm_up_logging(model: keras.Model, example: np.ndarray) -> None:
    """Pay what logging a model of this shape first costs: its calls and its serialisation.

    Keras imports TensorFlow the first time it serialises a model, and the call that gives a
    logged model its signature compiles every op anew for each shape (docs/benchmarks.md).
    """
    model(example)
    logged = portable(model)  # what is logged: the same weights in Keras's layers
    logged(example)
    keras.saving.serialize_keras_object(logged)
