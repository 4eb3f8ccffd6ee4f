"""RetinaNet R50-FPN training (`invoke retinanet.train`), mmdetection v2.9's 1x recipe.

Trains models.retinanet.net.RetinaNet (detectron2's layout and keys) so that the
checkpoint goes straight into the inference recipe: `invoke retinanet.all --weights
ARTIFACTS/retinanet/train/model_final.pth`.

| module         | what it holds                                                 | imports |
| -------------- | ------------------------------------------------------------- | ------- |
| targets.py     | anchor matching (IoU 0.5 / 0.4, low-quality), delta targets   | numpy   |
| losses.py      | sigmoid focal loss + L1, normalised by the positives          | torch   |
| profiles.py    | what the seed / upstream profile changes in training          | -       |
| data.py        | COCO train records, resize / flip, batch plan, collate        | numpy   |
| schedule.py    | SGD, linear warm-up, steps at epochs 8 and 11, lr scaling     | -       |
| backbone.py    | ImageNet backbone, frozen stages, calibrated random init      | torch   |
| checkpoints.py | atomic checkpoints, resume checks, weight digests             | torch   |
| device.py      | device, process group, mixed precision, RNG state             | torch   |
| trainer.py     | the loop (one step at a time) and the hook interface          | torch   |
| hooks.py       | schedule, logging / timing, checkpoint, ranks, evaluation     | torch   |
| evaluation.py  | COCO AP through the inference recipe's stage functions        | torch   |
| worker.py      | one process: builds the parts, runs the loop (DDP)            | torch   |
| summary.py     | train.json, compared with the published training              | -       |
| launch.py      | the stage: checks inputs, runs torchrun, writes train.json    | -       |

Reference: Ascend ModelZoo RetinaNet_for_PyTorch (mmdetection v2.9 retinanet_r50_fpn_1x,
COCO 2017, 910, apex O1, lr 0.04 and gradients clipped at norm 10 on 1 and 8 devices):
1 device mAP 0.366 after 12 epochs (train_full_1p.sh) and 17 images/s (the 1-epoch
train_performance_1p.sh), 8 devices 0.360 at 112 after 12. The `profile` (profiles.py):
seed trains as the ModelZoo's executed mmdetection (first 40 boxes an image, fixed
1344 x 800 / 800 x 1344 frames, static loss scale 64), upstream as mmdetection's config.
Known differences from it, kept on purpose: the backbone is detectron2's MSRA ResNet
(BGR, mean subtracted, std 1, stride in the 1x1 convs, FrozenBN with frozen affine terms
too) because the inference recipe's network is; mmdet's is torchvision's (RGB / std,
stride in the 3x3, BN affine terms trained).
"""
