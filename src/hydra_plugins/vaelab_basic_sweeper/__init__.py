"""vaelab's basic sweeper; Hydra loads sweepers only from the `hydra_plugins` namespace."""
