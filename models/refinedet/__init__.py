"""RefineDet320 VGG16 (luuuyi/RefineDet.PyTorch layout), as the ModelZoo ATC seed runs it.

| module         | what it holds                                                      |
| -------------- | ------------------------------------------------------------------ |
| net            | the network; state-dict keys are those of RefineDet320_VOC_final.pth |
| priors         | the 6375 prior boxes (reference PriorBox order), computed in code   |
| postprocess    | Detect_RefineDet semantics in numpy: objectness filter, two-stage   |
|                | decode, per-class NMS; VOC class names                              |
| export         | stage: ONNX opset 11, dynamic batch, checked against onnxruntime    |
| infer          | stage: a compiled model over the preprocessed store -> detections   |
| bench          | stage: ais_bench throughput of .om models per batch size            |

Only `net` and `export` import torch; the rest runs with numpy alone.
"""
