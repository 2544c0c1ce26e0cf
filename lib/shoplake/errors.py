"""The exceptions shoplake raises; every message says what the user should do next."""


class ShoplakeError(Exception):
    """Base class of every error shoplake raises on purpose."""


class ConfigError(ShoplakeError):
    """A setting is missing, malformed or unsafe (e.g. a real AWS endpoint on the local target)."""


class LocalServicesError(ShoplakeError):
    """The local services (emulator, PostgreSQL) is not running or cannot be started."""


class InfraError(ShoplakeError):
    """A resource in infra/resources.yaml cannot be planned, created or removed."""


class DataError(ShoplakeError):
    """Input data is missing or malformed."""
