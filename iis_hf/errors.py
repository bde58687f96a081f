"""The one error iis-hf raises on purpose, and the one line an error is reported with.

`IISError` marks input the user can fix (a setting, a file, a dataset). It is a ValueError, so code
that catches ValueError keeps working, and it may name the setting it is about (`field`, a dataclass
field such as "sparsity_ratios") so that each entry point can name it in its own spelling: the
command line as ``--sparsity-ratios``, the Python API as ``sparsity_ratios=``.

This module is the bottom of the package: it imports nothing from iis_hf.
"""

from __future__ import annotations


class IISError(ValueError):
    """Input the user can fix; the command line reports it as one line and exit code 2.

    Attributes:
        field: the setting at fault, as its dataclass field is named ("sparsity_ratios"), or None.
        owner: the dataclass holding that field ("HeadsConfig"), where the name alone is ambiguous
            (``batch_size`` is both an extraction and a head-training setting), or None.
    """

    def __init__(self, message: str = "", *, field: str | None = None, owner: str | None = None):
        super().__init__(message)
        self.field = field
        self.owner = owner

    @property
    def setting(self) -> str | None:
        """The field with its owner ("HeadsConfig.epochs"), as the config's messages begin."""
        if self.field is None:
            return None
        return f"{self.owner}.{self.field}" if self.owner else self.field

    def spelled_as(self, name: str, error_type: type[IISError] | None = None) -> IISError:
        """This error with its setting named `name` (a flag, a Trainer argument): ``HeadsConfig.epochs
        must be ...`` becomes ``--epochs must be ...``; a message that does not begin with its setting
        is prefixed (``--sparsity-ratios: sparsity ratio 1.5 ...``)."""
        message, setting = str(self), self.setting or ""
        if message.startswith(setting + " "):
            message = name + message[len(setting) :]
        elif not message.startswith(name):
            message = f"{name}: {message}"
        return (error_type or type(self))(message, field=self.field, owner=self.owner)


def first_line(err: BaseException, text: str | None = None) -> str:
    """The first line of an error's message (of `text` when given, e.g. an OSError's strerror), or
    the error's class name when that is empty: a one-line report must never be blank nor crash."""
    lines = (str(err) if text is None else text).strip().splitlines()
    return lines[0].strip() if lines else type(err).__name__
