"""The invoke task tree: one Collection per namespace, tasks thin, logic in zoobox.

Importing this must stay fast (`invoke --list` answers in well under a second): no
torch, no numpy; task bodies import what they need.
"""

from invoke import Collection

from zoobox.core.recipe import recipe_names
from zoobox.tasks import checks, data, dev, envs, images, npu
from zoobox.tasks.ci import ci
from zoobox.tasks.recipes import recipe_collection


def build_namespace() -> Collection:
    namespace = Collection()
    for name in recipe_names():
        namespace.add_collection(recipe_collection(name))
    namespace.add_collection(Collection.from_module(images, name="images"))
    namespace.add_collection(Collection.from_module(data, name="data"))
    namespace.add_collection(Collection.from_module(envs, name="envs"))
    namespace.add_collection(Collection.from_module(dev, name="dev"))
    namespace.add_collection(Collection.from_module(npu, name="npu"))
    namespace.add_task(checks.doctor)
    namespace.add_task(checks.demo)
    namespace.add_task(ci)
    return namespace
