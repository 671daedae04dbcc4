"""Workflows: the stages a user runs, as library functions (the CLI commands are thin adapters).

They sit above everything else of the project: the shared core (scaling's config, plan, store,
executors), the trainer and the analysis. Nothing but the commands imports them.
"""
