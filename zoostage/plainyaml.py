"""YAML without anchors and aliases: settings and recipe files are plain trees.

An alias repeats a node without copying it in the file, so a few lines of nested aliases
(the "billion laughs") expand to billions of nodes when loaded: yaml.safe_load then runs
for minutes. Nothing zoobox reads needs them, so they are refused before anything is
built, from the parser's events (which never expand an alias). Python 3.7 + PyYAML.
"""

from zoostage.errors import UserError


class AliasRefused(UserError):
    """The file uses an anchor (&name) or an alias (*name)."""


def check_no_aliases(text, name):
    """AliasRefused naming the line of the first anchor or alias in `text`."""
    import yaml

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        is_alias = isinstance(event, yaml.AliasEvent)
        if is_alias or getattr(event, "anchor", None) is not None:
            mark = event.start_mark
            raise AliasRefused(
                "%s: line %d: YAML %s %s%s is not accepted here (nothing in it may be "
                "repeated by reference): write the value out"
                % (
                    name,
                    mark.line + 1,
                    "alias" if is_alias else "anchor",
                    "*" if is_alias else "&",
                    event.anchor,
                )
            )


def safe_load_plain(text, name):
    """yaml.safe_load of `text` after check_no_aliases; YAML errors propagate."""
    import yaml

    check_no_aliases(text, name)
    return yaml.safe_load(text)
