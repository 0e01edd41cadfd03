"""ElectroCloud shared core: the wire contract, configuration loading and the CLI.

The stage packages (``edge``, ``backend``, ``billing``, ``simulator``) depend on
this package and on nothing of each other.
"""

from electrocloud.errors import ConfigError, ContractError, ElectroCloudError

__version__ = "0.1.0"

__all__ = ["ConfigError", "ContractError", "ElectroCloudError", "__version__"]
