"""The smoke checks' bookkeeping: run each, catch what it raises, say how it ended."""

import os
import sys
import traceback

from zoostage import cli

OK, FAILED, NEEDS_HOST, SKIPPED = "ok", "failed", "needs host", "skipped"
NOT_APPLICABLE = "not applicable"  # the host's chip is not one this env's recipes target
RESULTS = "smoke.json"


class NeedsHost(Exception):
    """The check needs a real Ascend host, or an image with the NPU stack; says why."""


class Skip(Exception):
    """The check does not apply here; says why."""


class Checks(object):
    """Runs checks in order, printing one line each; keeps what each found."""

    def __init__(self, where, stream=None):
        self.where = where
        self.stream = stream or sys.stdout
        self.results = []
        # component -> version found here (CANN, torch_aie, ...): the report lists them
        self.versions = {}

    def run(self, name, func, *args):
        """func(*args) -> a detail line. Whatever it raises decides the status."""
        error = None
        try:
            detail = str(func(*args))
            status = OK
        except NeedsHost as reason:
            status, detail = NEEDS_HOST, str(reason)
        except Skip as reason:
            status, detail = SKIPPED, str(reason)
        except Exception as caught:  # a smoke check reports every failure, never stops
            status = FAILED
            detail = "%s: %s" % (type(caught).__name__, caught)
            error = "".join(traceback.format_exception_only(type(caught), caught)).strip()
            last = traceback.extract_tb(sys.exc_info()[2])[-1:]
            if last:
                error += " (at %s:%d)" % (os.path.basename(last[0].filename), last[0].lineno)
        result = {"check": name, "where": self.where, "status": status, "detail": detail}
        if error:
            result["error"] = error
        self.results.append(result)
        self.stream.write("%-10s %s: %s\n" % (status, name, detail))
        self.stream.flush()
        return status == OK

    def write(self, out):
        cli.write_json(
            os.path.join(out, RESULTS),
            {"where": self.where, "checks": self.results, "versions": self.versions},
        )
