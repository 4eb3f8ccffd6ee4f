"""Stage-side model code: one package per recipe, plus `common` for what they share.

Runs in every env (Python 3.7 + torch 1.5 up to the host's newest); no torchvision.
"""
