"""Research probes of the built-in benchmark's base policy (not part of the product).

Each probe asks a trained policy, or a model trained for a few minutes, one question that the
success rate alone does not answer; docs/experiments/log.md says what each found. Run them from
the repository root with the project venv, e.g. ``.venv/bin/python -m research.ask --help``.
"""
