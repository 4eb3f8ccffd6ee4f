"""The command line of every dataset's sample generator (`python -m data_scripts.X.sample`).

    python -m data_scripts.<dataset>.sample --out ROOT [--images N | sizes] [--seed 0]

Each dataset's sample.py has `make_sample(root, ..., seed)`; this parses its size options
(integers), calls it, and says what it wrote, or one `error:` line.
"""

import argparse
import sys

from zoostage.errors import USER_ERROR_EXIT, UserError


def main(make_sample, description, sizes, argv=None):
    """`sizes`: [(option, default, help)] of integer options passed to make_sample."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", required=True, help="dataset root to create")
    for option, default, text in sizes:
        parser.add_argument(option, type=int, default=default, help="%s (%d)" % (text, default))
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    args = parser.parse_args(argv)
    options = dict((option[2:].replace("-", "_"), None) for option, _, _ in sizes)
    options = dict((name, getattr(args, name)) for name in options)
    try:
        make_sample(args.out, seed=args.seed, **options)
    except UserError as error:
        sys.stderr.write("error: %s\n" % error)
        sys.exit(USER_ERROR_EXIT)
    sizes_text = ", ".join("%s %d" % (name.replace("_", " "), v) for name, v in options.items())
    print("wrote a sample (%s) to %s" % (sizes_text, args.out))
