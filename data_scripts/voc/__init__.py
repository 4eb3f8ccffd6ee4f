"""PASCAL VOC2007 test: layout and annotations, preprocessing, VOC07 evaluation, samples.

- `layout`: find VOCdevkit/VOC2007, read ImageSets/Main/test.txt and the annotation XML.
- `prepare`: the data stage (RefineDet.PyTorch's BaseTransform into a store).
- `evaluate`: the evaluate stage (VOC07 11-point mAP, as RefineDet.PyTorch's voc_eval).
- `sample`: a small generated dataset in the VOC layout, for tests and dry runs.
"""
