"""Runners: where a stage's command runs (host subprocess, docker container, venv).

base      StageCall, the Runner interface, execute() (streams output, keeps the tail)
host      the current interpreter, repo on PYTHONPATH
docker    `docker run --rm` of the env's image; NPU devices and driver for NPU stages
venv      the interpreter of a virtual environment built from the env spec
factory   make_runner(): the one place a runner is built from settings
"""
