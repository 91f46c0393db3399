"""vaelab: variational autoencoders on MNIST, configured by Hydra, tracked in MLflow.

The layers, top to bottom (docs/design.md): orchestration, rules, engines, vae, vocab;
edges beside them.
"""
