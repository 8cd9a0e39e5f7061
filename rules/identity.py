"""A client's phone, e-mail and INN as a deal's fields hold them, checked and normalised.

Phones go through Google's libphonenumber (``phonenumbers``): "8 (916) 123-45-67",
"+7 916 1234567" and "79161234567" are one number, "+79161234567" (E.164), and a number
with a digit missing is refused with the reason. E-mails are compared lower-cased; an INN
must have 10 (an organisation) or 12 (a person) digits and a valid check digit. Pure: the
worker uses it to know what to search for, the ``find_duplicates`` step to say what it found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import phonenumbers

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_INN_10 = (2, 4, 10, 3, 5, 9, 4, 6, 8)
_INN_12_A = (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
_INN_12_B = (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)


@dataclass(frozen=True)
class Checked:
    """One value as written (``raw``), its normal form when it is valid, else the problem."""

    raw: str
    value: str | None
    problem: str | None = None


def field_values(value: Any) -> list[str]:
    """The texts of a field: a string, a list of them, or a CRM's multi-field entries
    (Bitrix24 ``[{"VALUE": …}]``, Pipedrive ``[{"value": …}]``)."""
    items: Iterable[Any] = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("VALUE", item.get("value"))
        if item is not None and str(item).strip():
            out.append(str(item).strip())
    return out


def check_phone(raw: str, region: str = "RU") -> Checked:
    """``raw`` as E.164, or why it is not a phone number (``region``: for numbers written
    without a country code, such as Russia's "8 916 …")."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        return Checked(raw, None, f"«{raw}» is not a phone number ({exc._msg})")
    if not phonenumbers.is_valid_number(number):
        reason = phonenumbers.is_possible_number_with_reason(number)
        why = {
            phonenumbers.ValidationResult.TOO_SHORT: "too short",
            phonenumbers.ValidationResult.TOO_LONG: "too long",
            phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length",
            phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
        }.get(reason, "no such number")
        return Checked(raw, None, f"«{raw}» is not a valid phone number: {why}")
    return Checked(raw, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def national_digits(e164: str) -> str:
    """The digits of a number without its country code ("+79161234567" → "9161234567")."""
    try:
        return str(phonenumbers.parse(e164).national_number)
    except phonenumbers.NumberParseException:
        return re.sub(r"\D", "", e164)


def check_email(raw: str) -> Checked:
    value = raw.strip().lower()
    if not _EMAIL.match(value):
        return Checked(raw, None, f"«{raw}» is not an e-mail address")
    return Checked(raw, value)


def check_inn(raw: str) -> Checked:
    """A Russian INN: 10 digits (organisation) or 12 (person), with valid check digits."""
    digits = re.sub(r"\D", "", raw)

    def check_digit(weights: tuple[int, ...]) -> int:
        return sum(w * int(d) for w, d in zip(weights, digits, strict=False)) % 11 % 10

    if len(digits) == 10 and check_digit(_INN_10) == int(digits[9]):
        return Checked(raw, digits)
    if len(digits) == 12 and check_digit(_INN_12_A) == int(digits[10]) and check_digit(_INN_12_B) == int(digits[11]):
        return Checked(raw, digits)
    return Checked(raw, None, f"«{raw}» is not a valid INN")


def check(by: str, raw: str, region: str = "RU") -> Checked:
    """``raw`` checked as a ``phone``, ``email`` or ``inn``."""
    if by == "phone":
        return check_phone(raw, region)
    if by == "email":
        return check_email(raw)
    return check_inn(raw)
