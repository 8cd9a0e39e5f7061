"""The CRM types the connector knows: each one's settings schema and adapter class."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema

from adapters.contracts import CrmAdapter


@dataclass(frozen=True)
class CrmType:
    name: str
    settings: Callable[[], type[Schema]]
    adapter: Callable[[], type[CrmAdapter]]


def _b24_settings() -> type[Schema]:
    from adapters.bitrix24.settings import Bitrix24Settings

    return Bitrix24Settings


def _b24_adapter() -> type[CrmAdapter]:
    from adapters.bitrix24.adapter import Bitrix24Adapter

    return Bitrix24Adapter


def _pipedrive_settings() -> type[Schema]:
    from adapters.pipedrive.settings import PipedriveSettings

    return PipedriveSettings


def _pipedrive_adapter() -> type[CrmAdapter]:
    from adapters.pipedrive.adapter import PipedriveAdapter

    return PipedriveAdapter


def _onec_settings() -> type[Schema]:
    from adapters.onec.settings import OneCSettings

    return OneCSettings


def _onec_adapter() -> type[CrmAdapter]:
    from adapters.onec.adapter import OneCAdapter

    return OneCAdapter


CRM_TYPES: dict[str, CrmType] = {
    "bitrix24": CrmType("bitrix24", _b24_settings, _b24_adapter),
    "pipedrive": CrmType("pipedrive", _pipedrive_settings, _pipedrive_adapter),
    "onec": CrmType("onec", _onec_settings, _onec_adapter),
}


def adapter_class(settings: Mapping[str, Any]) -> type[CrmAdapter]:
    """The adapter class of a configured CRM, for what it can do, without connecting to it."""
    return CRM_TYPES[settings["type"]].adapter()


def build_adapter(name: str, settings: Mapping[str, Any]) -> CrmAdapter:
    """The adapter for one configured CRM."""
    return adapter_class(settings)(name, settings)
