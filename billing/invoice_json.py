"""The canonical JSON form of an :class:`~billing.model.Invoice`: exact and byte-stable.

Rules (documented in docs/invoice-schema.md):

- keys in the model's declaration order; dict values (kWh per TOU period) keep
  the order the engine gave them, which is the tariff's period order;
- every Decimal is a JSON string, so no reader turns it into a float;
- money (``amount``, ``subtotal``, ``tax``, ``total``) has the same number of
  places everywhere in one invoice: the currency's minor unit ("12.30" EUR,
  "1234" JPY), or more when the tariff rounds to a finer unit (``minor_unit``)
  and an amount uses it; never fewer, so no amount is rounded here;
- other quantities have at least a fixed number of places (kWh and kW: 3, unit
  prices: 4, line quantities in other units: 0) and more only when the value
  needs them, so equal values always print the same way ("1.5" and "1.50" both
  become "1.500") and nothing is lost;
- two-space indent, UTF-8, one trailing newline.
"""

from __future__ import annotations

import decimal
import json
from datetime import date
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from billing.model import Invoice, LineItem
from billing.tariff import MINOR_UNITS

_MONEY_FIELDS = frozenset({"amount", "subtotal", "tax", "total"})
_ENERGY_PLACES = 3  # kWh and kW: Wh resolution
_UNIT_PRICE_PLACES = 4
_QUANTITY_PLACES: dict[str, int] = {"kWh": 3, "kW": 3}  # others (day, percent, ...): 0

#: Matches every Decimal string this module writes.
DECIMAL_PATTERN = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$"

# Wide enough that quantize never runs out of digits for any realistic invoice value.
_EXACT = decimal.Context(prec=60, traps=[decimal.InvalidOperation, decimal.Inexact])


class InvoiceFormatError(ValueError):
    """An invoice value cannot be written as an exact decimal (NaN, infinity)."""


def minor_unit_places(currency: str) -> int:
    """Decimal places of the currency's minor unit (the engine's table; 2 by default)."""
    return MINOR_UNITS.get(currency.upper(), 2)


def decimal_text(value: Decimal, min_places: int) -> str:
    """``value`` with at least ``min_places`` decimals and exactly as many more as it needs."""
    if not value.is_finite():
        raise InvoiceFormatError(f"{value} is not a finite number")
    if value.is_zero():
        value = Decimal(0)  # no "-0.000"
    quantum = Decimal(1).scaleb(-_places(value, min_places))
    return format(value.quantize(quantum, context=_EXACT), "f")


def _places(value: Decimal, min_places: int) -> int:
    exponent = value.normalize(_EXACT).as_tuple().exponent
    return max(min_places, -exponent) if isinstance(exponent, int) else min_places


def quantity_places(unit: str) -> int:
    """Minimum places of a line quantity in ``unit``: 3 for kWh and kW, else 0."""
    return _QUANTITY_PLACES.get(unit, 0)


def money_places(invoice: Invoice) -> int:
    """Places of every money value in ``invoice``: the minor unit, or more if one needs it."""
    amounts = [
        invoice.subtotal,
        invoice.tax,
        invoice.total,
        *(line.amount for line in invoice.lines),
    ]
    base = minor_unit_places(invoice.currency)
    return max([base, *(_places(amount, base) for amount in amounts if amount.is_finite())])


def _decimal_places(owner: BaseModel, field: str) -> int:
    if isinstance(owner, LineItem):
        if field == "quantity":
            return quantity_places(owner.unit)
        if field == "unit_price":
            return _UNIT_PRICE_PLACES
    return _ENERGY_PLACES


def _plain(value: Any, owner: BaseModel, field: str, money: int, where: str) -> Any:
    if isinstance(value, BaseModel):
        return _model(value, money, where)
    if isinstance(value, list):
        return [_plain(item, owner, field, money, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {
            str(key): _plain(item, owner, field, money, f"{where}.{key}")
            for key, item in value.items()
        }
    if isinstance(value, Decimal):
        places = money if field in _MONEY_FIELDS else _decimal_places(owner, field)
        try:
            return decimal_text(value, places)
        except InvoiceFormatError as exc:
            raise InvoiceFormatError(f"{where}: {exc}") from None
    if isinstance(value, date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | str):
        return value
    raise InvoiceFormatError(f"{where}: cannot write {type(value).__name__} to invoice JSON")


def _model(model: BaseModel, money: int, where: str) -> dict[str, Any]:
    prefix = f"{where}." if where else ""
    return {
        name: _plain(getattr(model, name), model, name, money, prefix + name)
        for name in type(model).model_fields
    }


def invoice_document(invoice: Invoice) -> dict[str, Any]:
    """The invoice as plain JSON values (Decimals already strings), keys in model order."""
    return _model(invoice, money_places(invoice), "")


def invoice_json(invoice: Invoice) -> bytes:
    """The canonical JSON bytes of ``invoice``: same invoice, same bytes."""
    text = json.dumps(invoice_document(invoice), ensure_ascii=False, indent=2)
    return (text + "\n").encode("utf-8")


def parse_invoice_json(data: bytes | str) -> Invoice:
    """Read canonical invoice JSON back into the model (validating it)."""
    return Invoice.model_validate_json(data)


class _InvoiceSchemaGenerator(GenerateJsonSchema):
    # Decimals are written as strings (see module docstring), never as JSON numbers.
    def decimal_schema(self, schema: core_schema.DecimalSchema) -> JsonSchemaValue:
        return {"type": "string", "pattern": DECIMAL_PATTERN}


def invoice_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the canonical invoice JSON, from the pydantic model."""
    schema = Invoice.model_json_schema(
        mode="serialization", schema_generator=_InvoiceSchemaGenerator
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:electrocloud:invoice:v1",
        **schema,
    }


def invoice_json_schema_text() -> str:
    """The schema as written to docs/invoice.schema.json."""
    return json.dumps(invoice_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m billing.invoice_json > docs/invoice.schema.json
    print(invoice_json_schema_text(), end="")
