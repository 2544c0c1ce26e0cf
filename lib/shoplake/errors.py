"""The exceptions shoplake raises; every message says what the user should do next."""


class ShoplakeError(Exception):
    """Base class of every error shoplake raises on purpose."""


class ConfigError(ShoplakeError):
    """A setting is missing, malformed or unsafe (e.g. a real AWS endpoint on the local target)."""


class LocalServicesError(ShoplakeError):
    """The local services (emulator, PostgreSQL) are not running or cannot be started."""


class InfraError(ShoplakeError):
    """A resource in infra/resources.yaml cannot be planned, created or removed."""


class DataError(ShoplakeError):
    """Input data is missing or malformed."""


def read_user_text(path: object, what: str, error: type[ShoplakeError] = DataError, hint: str = "") -> str:
    """The UTF-8 text of a file the user named (``what``: "the SQL file" ...), or ``error`` with a one-line reason
    (followed by ``hint``, what to do instead, when given).

    A missing file, a folder, an unreadable file or one that is not UTF-8 text (a binary) never becomes a traceback.
    """
    import os

    name = os.fspath(path)  # type: ignore[call-overload]
    tail = f": {hint}" if hint else ""
    try:
        with open(name, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise error(f"{what} {name} does not exist{tail}") from None
    except IsADirectoryError:
        raise error(f"{what} {name} is a folder, not a file{tail}") from None
    except PermissionError:
        raise error(f"{what} {name} cannot be read (permission denied){tail}") from None
    except OSError as exc:
        raise error(f"{what} {name} cannot be read ({exc.strerror or exc}){tail}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} {name} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}; a binary file?){tail}"
        ) from None
    if "\x00" in text:
        raise error(f"{what} {name} is a binary file (it holds NUL bytes){tail}")
    return text.removeprefix("\ufeff")
