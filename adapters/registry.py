"""The CRM types the connector knows, and the one place that knows their packages.

Each type is registered with its settings schema, its adapter class and, when its settings
refer to other configured CRMs, a cross-check. The config is loaded and checked through
here, so the runtime and the rules never name a CRM; a new CRM needs one
``register_crm_type`` call (below, or from its own code).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError

from adapters.contracts import ConfiguredCrm, CrmAdapter, CrmSettings, SettingsSchema

# A cross-check gets the CRM's name and settings and every configured CRM; it answers
# problems by settings key, as marshmallow does.
CrossCheck = Callable[[str, Any, Mapping[str, ConfiguredCrm]], dict[str, list[str]]]
Loader = Callable[[], type[Any]]


@dataclass(frozen=True)
class CrmType:
    """One registered CRM type. ``settings`` and ``adapter`` are loaders, so a CRM package is
    imported only when a config uses it (and a broken one does not stop the others)."""

    name: str
    settings: Callable[[], type[SettingsSchema]]
    adapter: Callable[[], type[CrmAdapter[Any]]]
    cross_check: CrossCheck | None = None


CRM_TYPES: dict[str, CrmType] = {}


def _loader(value: type[Any] | Callable[[], type[Any]]) -> Callable[[], type[Any]]:
    if isinstance(value, type):
        return lambda: value
    return value


def register_crm_type(
    name: str,
    *,
    settings: type[SettingsSchema] | Callable[[], type[SettingsSchema]],
    adapter: type[CrmAdapter[Any]] | Callable[[], type[CrmAdapter[Any]]],
    cross_check: CrossCheck | None = None,
) -> CrmType:
    """Make ``type: name`` known to the config: its settings schema and adapter class (each a
    class, or a function returning it when first needed), and an optional cross-check."""
    if name in CRM_TYPES:
        raise ValueError(f"CRM type {name!r} is registered already")
    entry = CrmType(name, _loader(settings), _loader(adapter), cross_check)
    CRM_TYPES[name] = entry
    return entry


def unregister_crm_type(name: str) -> None:
    """Forget a registered type (tests that register their own)."""
    CRM_TYPES.pop(name, None)


def load_settings(block: Mapping[str, Any]) -> CrmSettings:
    """One ``crms.<name>`` block as its type's settings; a ``ValidationError`` says what is wrong."""
    kind = block.get("type")
    entry = CRM_TYPES.get(kind) if isinstance(kind, str) else None
    if entry is None:
        raise ValidationError({"type": [f"unknown CRM type {kind!r}; known: {', '.join(CRM_TYPES)}"]})
    return entry.settings()().load_settings(block)


def adapter_class(settings: CrmSettings) -> type[CrmAdapter[Any]]:
    """The adapter class of a configured CRM: what it can do, without connecting to it."""
    return CRM_TYPES[settings.type].adapter()


def build_adapter(name: str, settings: CrmSettings) -> CrmAdapter[Any]:
    """The adapter for one configured CRM."""
    return adapter_class(settings)(name, settings)


def configured(crms: Mapping[str, CrmSettings]) -> dict[str, ConfiguredCrm]:
    """The configured CRMs with their adapter classes."""
    return {name: ConfiguredCrm(name, settings, adapter_class(settings)) for name, settings in crms.items()}


def cross_check(crms: Mapping[str, ConfiguredCrm]) -> dict[str, dict[str, list[str]]]:
    """Every CRM's settings checked against the others: problems by CRM name and settings key."""
    problems: dict[str, dict[str, list[str]]] = {}
    for name, crm in crms.items():
        check = CRM_TYPES[crm.settings.type].cross_check
        found = check(name, crm.settings, crms) if check is not None else {}
        if found:
            problems[name] = found
    return problems


# --- the CRMs shipped with the connector ------------------------------------------------------


def _bitrix24_settings() -> type[SettingsSchema]:
    from adapters.bitrix24.settings import Bitrix24SettingsSchema

    return Bitrix24SettingsSchema


def _bitrix24_adapter() -> type[CrmAdapter[Any]]:
    from adapters.bitrix24.adapter import Bitrix24Adapter

    return Bitrix24Adapter


def _pipedrive_settings() -> type[SettingsSchema]:
    from adapters.pipedrive.settings import PipedriveSettingsSchema

    return PipedriveSettingsSchema


def _pipedrive_adapter() -> type[CrmAdapter[Any]]:
    from adapters.pipedrive.adapter import PipedriveAdapter

    return PipedriveAdapter


def _onec_settings() -> type[SettingsSchema]:
    from adapters.onec.settings import OneCSettingsSchema

    return OneCSettingsSchema


def _onec_adapter() -> type[CrmAdapter[Any]]:
    from adapters.onec.adapter import OneCAdapter

    return OneCAdapter


def _onec_cross_check(name: str, settings: Any, crms: Mapping[str, ConfiguredCrm]) -> dict[str, list[str]]:
    from adapters.onec.settings import cross_check as check

    return check(name, settings, crms)


# --- channels: where messages are posted (a chat; a mailbox would be one more type) -------------

CHANNEL_TYPES: dict[str, CrmType] = {}


def register_channel_type(
    name: str,
    *,
    settings: type[SettingsSchema] | Callable[[], type[SettingsSchema]],
    adapter: type[CrmAdapter[Any]] | Callable[[], type[CrmAdapter[Any]]],
) -> CrmType:
    """Make ``channels.<name>: {type: name}`` known: its settings schema and its ``Channel`` adapter."""
    if name in CHANNEL_TYPES:
        raise ValueError(f"channel type {name!r} is registered already")
    entry = CrmType(name, _loader(settings), _loader(adapter))
    CHANNEL_TYPES[name] = entry
    return entry


def load_channel_settings(block: Mapping[str, Any]) -> CrmSettings:
    """One ``channels.<name>`` block as its type's settings; a ``ValidationError`` says what is wrong."""
    kind = block.get("type")
    entry = CHANNEL_TYPES.get(kind) if isinstance(kind, str) else None
    if entry is None:
        raise ValidationError({"type": [f"unknown channel type {kind!r}; known: {', '.join(CHANNEL_TYPES)}"]})
    return entry.settings()().load_settings(block)


def build_channel(name: str, settings: CrmSettings) -> CrmAdapter[Any]:
    """The adapter of one configured channel."""
    return CHANNEL_TYPES[settings.type].adapter()(name, settings)


def _telegram_settings() -> type[SettingsSchema]:
    from adapters.telegram.settings import TelegramSettingsSchema

    return TelegramSettingsSchema


def _telegram_adapter() -> type[CrmAdapter[Any]]:
    from adapters.telegram.adapter import TelegramChannel

    return TelegramChannel


register_channel_type("telegram", settings=_telegram_settings, adapter=_telegram_adapter)
register_crm_type("bitrix24", settings=_bitrix24_settings, adapter=_bitrix24_adapter)
register_crm_type("pipedrive", settings=_pipedrive_settings, adapter=_pipedrive_adapter)
register_crm_type("onec", settings=_onec_settings, adapter=_onec_adapter, cross_check=_onec_cross_check)
