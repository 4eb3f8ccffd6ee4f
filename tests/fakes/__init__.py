"""Stand-ins for the NPU stack (torch_aie, ais_bench) that the smoke-check tests put on
PYTHONPATH: they run on the CPU and answer the way the tests set them up to."""
