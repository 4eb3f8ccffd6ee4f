"""Stage-side helpers shared by every stage module (runs in every env, Python 3.7+).

Nothing here imports torch at module level: stages that need it import it themselves.
"""
