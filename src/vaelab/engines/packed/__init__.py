"""Many VAEs trained together as one compiled program: `jax.vmap` over Keras models.

A group's members may differ in seed, learning rate, loss, style, sizes and epochs. They all
run through one Keras model built at the group's largest sizes, called statelessly under
`jax.vmap` with each member's own weights, and one Keras Adam applied statelessly with each
member's own state (its learning rate is part of that state). What makes a packed member
the same model as a solo run, whatever it is packed with:

- sizes: smaller members are padded with zero weights, and masks zero the padded units'
  samples, gradients and so their Adam updates: a padded unit stays exactly zero. Every
  reduction over latent units counts the member's own units only (`losses.latent_mask`);
- initial weights: drawn by building the member's own Keras model (its style, its sizes) from
  its own seed, exactly as a solo run does, then padded;
- randomness: the data order is the member's `batches.epoch_orders`; sampling noise comes
  from the member's key folded with the epoch, the step and the unit's index, so unit j's
  noise does not depend on how far the group pads; in evaluation, with the digit's index
  too, so that it does not depend on how the digits are batched either;
- epochs: the group trains to its longest; a member stops updating after its own last epoch,
  or the epoch at which it is told to stop (`Events.should_stop`), its weights are kept there
  and its results are taken at that point;
- failures: a member whose loss turns NaN or inf stops updating, and only it fails.

Needs the JAX backend. Knows nothing of MLflow or Hydra: it takes `engines.base.Job`s and the
group's data, and reports through `engines.base.Events` like every engine.

One module per concern, each imported where it is used (this package exports nothing):
`engine` (the engine: rounds, shrinking), `roster` (each member's epoch, history and fate),
`layout` (members laid out on lanes, their batches), `lanes` (the member axis sharded over
the devices), `members` (each member's model, state, checkpoints; what a group shares),
`program` (the jitted, vmapped functions and their cache), `streams` (random streams),
`padding` (pad, crop, masks) and `finish` (what is measured after training).
"""
