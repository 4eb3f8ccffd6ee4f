"""Environments: the specs in envs/ and their materializations (images, venvs)."""
