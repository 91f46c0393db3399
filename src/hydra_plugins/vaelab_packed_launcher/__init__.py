"""vaelab's packed launcher; Hydra loads launchers only from the `hydra_plugins` namespace."""
