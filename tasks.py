"""zoobox's invoke entry point: `invoke --list`. The task tree is built in zoobox.tasks."""

from pathlib import Path

from zoobox.core.errors import main_guard
from zoobox.core.settings_file import check_settings_files
from zoobox.tasks import build_namespace

# invoke reads invoke.yaml only after importing this file: a broken one is one line here.
main_guard(lambda: check_settings_files(Path(__file__).resolve().parent))
ns = build_namespace()
