"""The life of a sweep in the run store: one owner for its runs and its verdict.

A sweep is one parent run whose children are its configurations. `parent` starts it (finds
or creates the parent, marks children that a dead process left RUNNING as KILLED: `claims`),
`claims` tells a job whether its configuration already FINISHED or is trained elsewhere, and
what it may resume, `children` finds them and records a job that failed before its run
existed, `attempts` picks each configuration's current attempt, `summary` counts and ranks
them and `verdict` closes the sweep. `context` carries the sweep to its jobs. The Hydra
callback, the packed launcher, the rerun of a sweep and the report all go through it; the tag
names it writes are in `vocab.tags`, the lines a user reads in `rules.console`.
"""
