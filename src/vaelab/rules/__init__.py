"""Shared rules: what a run is, how a sweep lives, how runs rank and pack, how events become runs.

`identity`, `lifecycle`, `ranking`, `packing` and `recorder`: the policies every entry point
shares, so that solo and packed runs, sweeps, reruns and reports cannot disagree.
"""
