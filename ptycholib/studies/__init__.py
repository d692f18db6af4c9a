"""Long experiments (minutes to an hour of CPU) whose results go to docs/results.md.

Each module is runnable with ``python -m ptycholib.studies.<name> --help``; none runs in the tests'
or the main job's budget except through its own small smoke test.
"""
