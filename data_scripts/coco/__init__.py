"""COCO val2017: layout and categories, preprocessing, evaluation, generated samples.

- `layout`: where the files are, the annotation file, the 80 categories and their labels;
- `prepare`: the data stage (detectron2 test-time preprocessing into a store);
- `evaluate`: the evaluate stage (pycocotools bbox AP over the images that were run);
- `figure`: a picture of a few images with their detections;
- `sample`: a small generated dataset in the same layout, for tests.
"""
