"""The invoke task tree: one Collection per namespace, tasks thin, logic in zoobox.

Importing this must stay fast (`invoke --list` answers in well under a second): no
torch, no numpy; task bodies import what they need.
"""

import sys

from invoke import Collection

from zoobox.core.errors import UserError
from zoobox.core.recipe import recipe_names
from zoobox.tasks import cluster, data, dev, envs, images, npu, top_level
from zoobox.tasks.ci import ci
from zoobox.tasks.recipes import broken_recipe_collection, recipe_collection


def build_namespace() -> Collection:
    namespace = Collection()
    for name in recipe_names():
        try:
            namespace.add_collection(recipe_collection(name))
        except UserError as error:
            # One broken recipe file must not take the other recipes (or --list) down:
            # one line here, and its task repeats it.
            print(f"error: {error}", file=sys.stderr)
            namespace.add_collection(broken_recipe_collection(name, error))
    namespace.add_collection(Collection.from_module(images, name="images"))
    namespace.add_collection(Collection.from_module(data, name="data"))
    namespace.add_collection(Collection.from_module(envs, name="envs"))
    namespace.add_collection(Collection.from_module(dev, name="dev"))
    namespace.add_collection(Collection.from_module(npu, name="npu"))
    namespace.add_collection(Collection.from_module(cluster, name="cluster"))
    namespace.add_task(top_level.doctor)
    namespace.add_task(top_level.demo)
    namespace.add_task(ci)
    return namespace
