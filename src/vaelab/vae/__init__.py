"""The model and its data: the dense VAE (Keras), its losses, MNIST, sizes and figures.

Takes plain typed arguments: no config, no store, no Hydra. Imports only the vocabulary.
"""
