"""Errors a user can cause, reported as one line with no traceback."""


class UserError(Exception):
    """Something the user can fix: a missing dataset, a wrong checkpoint, a corrupt image.

    The message is the whole report: say what is wrong and what to do about it.
    """


# Exit status of a stage that stopped on a UserError: the host side knows the stage
# already printed its one-line reason and adds no traceback of its own.
USER_ERROR_EXIT = 3
