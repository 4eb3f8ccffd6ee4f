"""Stage parameters, declared once: a stage's command line and a recipe's knobs.

Each stage module's parameters are declared in its package's `params.py`, as a tuple
named after the module in capitals (data_scripts/widerface/params.py: PREPARE, for
data_scripts.widerface.prepare), one `Param` per flag:

    Param("limit", "int", 0, "N images spread over the events (0: all)", min=0,
          recipe="limit")

says the flag (--limit), its type, default, help, range or choices, and which parameter
of recipe.yaml sets it (`recipe`; none for what a recipe wires itself, such as upstream
folders). Everything else is derived from it:

- the stage's argparse CLI: `cli.parser(description, PARAMS)` (ranges checked at parse);
- the host's binding: a recipe's stage gets `--limit {p.limit}` without a line in
  recipe.yaml, whose `args` bind only the rest (upstream folders, the dataset, values
  put together from several parameters, a parameter under another name);
- the recipe's parameters (zoobox.core.recipe): type, help and range come from here; a
  recipe.yaml may give a parameter a different default or fewer choices, nothing else;
- the invoke options' help and the checks of --param values (the same table);
- the fingerprint: the arguments rendered from the binding.

Declaration modules import neither numpy nor torch: the host reads them for
`invoke --list`. Python 3.7.
"""

import argparse
import importlib

from zoostage.errors import UserError
from zoostage.recipe import TYPES, ParamSpec

_PYTHON_TYPES = {"int": int, "float": float}


class Param(ParamSpec):
    """One stage flag: a ParamSpec (type, default, range, help) with its flag and binding.

    `recipe`: the recipe.yaml parameter that sets it (None: the recipe binds it, if at
    all, in the stage's `args`). `convert`: a function from the text to the value for
    types argparse cannot name (the type is then "str" for the recipe). `nargs`/`const`:
    argparse's, for a flag that may come without a value.
    """

    def __init__(
        self,
        flag,
        type_name="str",
        default=None,
        help="",
        choices=None,
        min=None,
        max=None,
        recipe=None,
        required=False,
        convert=None,
        nargs=None,
        const=None,
    ):
        if type_name not in TYPES:
            raise ValueError("--%s: type must be one of %s" % (flag, ", ".join(TYPES)))
        if type_name == "bool" and default is None:
            default = False
        ParamSpec.__init__(
            self, recipe or flag.replace("-", "_"), default, type_name, min, max, choices, help
        )
        self.flag = flag
        self.dest = flag.replace("-", "_")
        self.recipe = recipe
        self.required = required
        self.convert = convert
        self.nargs = nargs
        self.const = const

    def but(self, **changes):
        """A copy with some fields changed: a shared declaration with this stage's help."""
        fields = dict(
            flag=self.flag,
            type_name=self.type_name,
            default=self.default,
            help=self.help,
            choices=self.choices or None,
            min=self.minimum,
            max=self.maximum,
            recipe=self.recipe,
            required=self.required,
            convert=self.convert,
            nargs=self.nargs,
            const=self.const,
        )
        fields.update(changes)
        return Param(**fields)

    def add_to(self, parser):
        kwargs = {"dest": self.dest, "help": self.help or None}
        if self.type_name == "bool":
            kwargs["action"] = "store_true"
        else:
            kind = self.convert or _PYTHON_TYPES.get(self.type_name)
            if kind is not None:
                kwargs["type"] = kind
            kwargs["default"] = self.default
            if self.choices:
                kwargs["choices"] = self.choices
            if self.required:
                kwargs["required"] = True
            if self.nargs is not None:
                kwargs["nargs"] = self.nargs
                kwargs["const"] = self.const
        parser.add_argument("--" + self.flag, **kwargs)

    def __repr__(self):
        return "Param(--%s, %s, recipe=%r)" % (self.flag, self.type_name, self.recipe)


class StageParser(argparse.ArgumentParser):
    """An ArgumentParser that also checks the declared ranges (min, max) of what it parsed."""

    def __init__(self, *args, **kwargs):
        argparse.ArgumentParser.__init__(self, *args, **kwargs)
        self.declared = []

    def add_params(self, params):
        for param in params:
            param.add_to(self)
            self.declared.append(param)
        return self

    def parse_known_args(self, args=None, namespace=None):
        namespace, rest = argparse.ArgumentParser.parse_known_args(self, args, namespace)
        for param in self.declared:
            value = getattr(namespace, param.dest, None)
            if value is None or param.type_name == "bool" or param.convert is not None:
                continue
            try:
                param.check(value, "argument --%s" % param.flag)
            except UserError as error:
                self.error(str(error))
        return namespace, rest


def declared(module_name):
    """The Params of a stage module: `<its package>.params.<MODULE NAME IN CAPITALS>`."""
    package, _, name = module_name.rpartition(".")
    where = "%s.params.%s" % (package, name.upper())
    try:
        table = importlib.import_module(package + ".params")
    except ImportError as error:
        raise UserError(
            "stage %s declares no parameters (%s: %s)" % (module_name, where, error)
        ) from None
    params = getattr(table, name.upper(), None)
    if params is None:
        raise UserError("stage %s declares no parameters (no %s)" % (module_name, where))
    flags = [param.flag for param in params]
    repeated = sorted(set(flag for flag in flags if flags.count(flag) > 1))
    if repeated:
        raise UserError("%s declares --%s twice" % (where, ", --".join(repeated)))
    return tuple(params)
