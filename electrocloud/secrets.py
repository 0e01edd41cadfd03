"""Refuse placeholder secrets, so a copied ``.env.example`` cannot start a service.

``.env.example`` ships every secret as ``CHANGE_ME``; a service started with such
a value would run with a password everybody knows. Config loaders call
:func:`refuse_placeholder` for each password and token; pydantic validators use
:func:`check_not_placeholder`, which raises ``ValueError`` (reported by
:func:`electrocloud.config.load_settings` as a ConfigError naming the file line
or environment variable).
"""

from __future__ import annotations

import re

from electrocloud.errors import ConfigError, ConfigProblem

# Whole-value matches only: a real password may contain "change" or "example".
_PLACEHOLDER_RE = re.compile(
    r"""^\s*(?:
        <[^<>]*>                                   # <your-token>, <password>
      | \$\{[^}]*\}                                # ${VAR} left unexpanded
      | change[-_ ]?me(?:[-_ ].*)?                 # CHANGE_ME, changeme, change-me-please
      | (?:your|my)[-_ ]?(?:password|token|secret)  # your-password
      | placeholder | example | secret | password | token | xxx+ | todo | fixme
    )\s*$""",
    re.IGNORECASE | re.VERBOSE,
)


def is_placeholder(value: str) -> bool:
    """True for an empty value or one that is obviously a placeholder, not a secret."""
    return not value.strip() or bool(_PLACEHOLDER_RE.match(value))


def check_not_placeholder(value: str, name: str = "secret") -> str:
    """Return ``value``; ValueError naming ``name`` if it is a placeholder."""
    if is_placeholder(value):
        raise ValueError(
            f"{name} is a placeholder ({value!r}), not a secret: set a real value "
            "(see .env.example and docs/production.md)"
        )
    return value


def refuse_placeholder(name: str, value: str | None) -> None:
    """Raise ConfigError naming ``name`` if ``value`` is a placeholder (None means unset: ok)."""
    if value is None:
        return
    try:
        check_not_placeholder(value, name)
    except ValueError as exc:
        raise ConfigError(name, [ConfigProblem(name, name, str(exc))]) from None


__all__ = ["check_not_placeholder", "is_placeholder", "refuse_placeholder"]
