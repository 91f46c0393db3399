"""Engines: train a batch of jobs and report events (`base`: the one interface).

`solo` (Keras fit or the hand-written loop, a job at a time) and `packed` (many jobs as one
`jax.vmap` program). The only layer that touches a backend (TensorFlow or JAX); it never
writes a run: the recorder (`rules.recorder`) does, from the events.
"""
