"""Orchestration: the functions entry points call.

`train` (the one training path, with `checks`, `engine_inputs`, `skipping`, `grouping`,
`group_bar`, `stores` and `overheads`), `sweep` (Hydra's callback and a sweep's job), `rerun`
and `report`. Each composes the layers below; none is imported by them.
"""
