"""The one error iis-hf raises on purpose, and the one line an error is reported with.

`IISError` marks input the user can fix (a setting, a file, a dataset). It is a ValueError, so code
that catches ValueError keeps working, and it may name the setting it is about (`field`, a dataclass
field such as "sparsity_ratios"); a setting has one name, so the command line names it by its flag
(``--sparsity-ratios``: the field name with dashes) and the Python API by the field itself.

This module is the bottom of the package: it imports nothing from iis_hf.
"""

from __future__ import annotations


class IISError(ValueError):
    """Input the user can fix; the command line reports it as one line and exit code 2.

    Attributes:
        field: the setting at fault, as its dataclass field is named ("sparsity_ratios"), or None.
            A setting has one name everywhere, so an entry point names it by the rule that spells its
            own arguments from field names (the command line: ``--sparsity-ratios``).
        owner: the dataclass holding that field ("HeadsConfig"), or None.
        problem: what is wrong, without the setting's name ("must be an int >= 1, got 0"), when the
            message is "<owner>.<field> <problem>" (`invalid`): an entry point puts its own name first.
    """

    def __init__(
        self, message: str = "", *, field: str | None = None, owner: str | None = None, problem: str = ""
    ):
        super().__init__(message)
        self.field = field
        self.owner = owner
        self.problem = problem

    @property
    def setting(self) -> str | None:
        """The field with its owner ("HeadsConfig.epochs"), as the config's messages begin."""
        if self.field is None:
            return None
        return f"{self.owner}.{self.field}" if self.owner else self.field

    @classmethod
    def invalid(cls, owner: str, field: str, problem: str) -> IISError:
        """The error of a bad value of `owner.field`: "HeadsConfig.epochs must be an int >= 1, got 0"."""
        return cls(f"{owner}.{field} {problem}", field=field, owner=owner, problem=problem)

    def named(self, name: str) -> str:
        """The one line that reports this error with its setting called `name` (a flag, a Trainer
        argument): "--epochs must be an int >= 1, got 0", or "--sparsity-ratios: <message>"."""
        return f"{name} {self.problem}" if self.problem else f"{name}: {self}"


def first_line(err: BaseException, text: str | None = None) -> str:
    """The first line of an error's message (of `text` when given, e.g. an OSError's strerror), or
    the error's class name when that is empty: a one-line report must never be blank nor crash."""
    lines = (str(err) if text is None else text).strip().splitlines()
    return lines[0].strip() if lines else type(err).__name__
