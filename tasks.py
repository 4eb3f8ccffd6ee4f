"""zoobox's invoke entry point: `invoke --list`. The task tree is built in zoobox.tasks."""

from zoobox.tasks import build_namespace

ns = build_namespace()
