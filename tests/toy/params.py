"""Parameters of the toy stage (tests.toy.stage): see zoostage.declare. The toy recipe
binds --add to a different parameter for each stage, so it names none here."""

from zoostage.declare import Param

STAGE = (
    Param("input", help="upstream stage folder (value.txt)"),
    Param("add", "int", 1, "added to the upstream value"),
    Param("pause-file", help="written, then waited on until removed: a window to kill in"),
    Param("fail", help="user: a UserError; crash: a traceback"),
    Param("data", help="the dataset root"),
    Param("items", "int", 0, "a sharded stage: N items, one file each"),
    Param("shard", help="I/N"),
    Param("device", help="the device"),
    Param("helper", "bool", help="start a helper process, as a stage's worker pool does"),
)
