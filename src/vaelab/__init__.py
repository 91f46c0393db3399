"""vaelab: variational autoencoders on MNIST, configured by Hydra and tracked in MLflow."""
