"""WIDER FACE val: layout and ground truth, preprocessing, evaluation, generated samples."""
