"""vaelab: variational autoencoders on MNIST, configured by Hydra and tracked in MLflow."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) buries the run's own
# output; errors still show. Set before anything imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
