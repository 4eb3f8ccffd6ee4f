"""Smoke checks for a first Ascend host: what cannot be known without one.

Each module runs inside the image of its env (`invoke npu.smoke` starts them through the
docker runner, or the host runner without images) and writes OUT/smoke.json:

- zoostage.smoke.aie (aie env): torch_aie.Input's default dtype, compile's default
  precision policy, a 1-conv module compiled, saved, then loaded and run by another
  process and on another device id, the AIE runtime's set_env.sh;
- zoostage.smoke.atc (atc env): ATC on a 1-conv ONNX with allow_fp32_to_fp16,
  ais_bench's InferSession on the .om and the unit of its exec time;
- both: the container's uid, passwd entry and groups, its view of the device nodes, CANN.

Every check ends ok, failed (with the error it caught), needs host (it needs a real Ascend
host or an NPU image: why), or skipped (it does not apply here: why).
"""
