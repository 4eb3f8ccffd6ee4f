"""The parameters every data stage shares (zoostage.store's feed, size, subset,
workers): see zoostage.declare. Each dataset's params.py adds its own."""

from zoostage.declare import Param


def prepare(root_help, input_size=None, limit_help="only the first N images (0: all)"):
    """The data stages' common parameters. `input_size`: the stage's default square input
    side, or None when the stage's size is fixed (no --input-size).

    The feed (--mean-bgr, --std-bgr, --channels, --pad) is a fact of the model, not of
    the dataset: the recipe passes its `input` block (models/<recipe>/recipe.yaml).
    """
    params = [Param("root", help=root_help, required=True)]
    if input_size is not None:
        params.append(
            Param(
                "input-size",
                "int",
                input_size,
                "square network input side S (pixels)",
                min=32,
                recipe="input_size",
            )
        )
    params += [
        Param("limit", "int", 0, limit_help, min=0, recipe="limit"),
        Param(
            "workers",
            "int",
            0,
            "preprocessing processes (0: all cores)",
            min=0,
            recipe="workers",
        ),
        Param(
            "skip-bad",
            "bool",
            help="leave out (and count) images that cannot be read, instead of stopping",
            recipe="skip_bad",
        ),
        Param(
            "mean-bgr",
            help="B,G,R mean the model subtracts (the recipe's input)",
            required=True,
        ),
        Param("std-bgr", default="1,1,1", help="B,G,R std the model divides by"),
        Param("channels", default="bgr", choices=("bgr", "rgb"), help="channel order fed"),
        Param(
            "pad",
            default="before_norm",
            choices=("before_norm", "after_norm"),
            help="padding normalized with the image (before_norm) or zero after it",
        ),
    ]
    return tuple(params)
