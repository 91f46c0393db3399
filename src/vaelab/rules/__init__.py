"""Shared rules: what a run is, how a sweep lives, how runs rank and pack, how events become runs.

`identity`, `lifecycle` (a package: a sweep in the store), `ranking`, `packing` and `recorder`
(with what it writes: `runs`, `naming`, `run_metrics`, `figures`, `run_writes`, `writers`,
`resume`, `trials`): the policies every entry point shares, so that solo and packed runs,
sweeps, reruns and reports cannot disagree. `console` holds every sentence a user reads.
"""
