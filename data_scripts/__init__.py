"""Stage-side dataset code: locate / verify, preprocess to a model's input, evaluate.

One module per dataset. Runs in every env (Python 3.7 + torch 1.5 and newer).
"""
