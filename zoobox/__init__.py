"""zoobox: Ascend ModelZoo detector recipes, reproduced in containers with one command each.

This top-level module is imported by both sides: the host-side engine (Python >= 3.9) and
the stage-side code that runs inside the containers (down to Python 3.7 + torch 1.5).
Keep it free of imports and of syntax newer than 3.7.
"""

__version__ = "0.1.0"
