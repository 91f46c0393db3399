"""Edges: the outside world, each behind one module.

The config schema (`config`), the run store through MLflow's API (`tracking`) and behind it
(`mlflow_tables`), the team server (`server`) and the UI (`ui`), the console (`cli`), the
process around runs (`process`), and where the code came from (`provenance`).
"""
