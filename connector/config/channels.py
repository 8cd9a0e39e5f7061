"""The ``channels:`` section: where rules and reports post messages (a chat, a mailbox)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import ValidationError

from adapters.contracts import ConfiguredCrm, CrmSettings
from adapters.registry import CHANNEL_TYPES, load_channel_settings

Report = Callable[..., None]


def load_channels(section: Any, crm_names: set[str], add: Report) -> dict[str, CrmSettings]:
    """Each ``channels.<name>`` block as its type's settings; problems go to ``add``."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        add(["a mapping of channel name: settings"], ("channels",))
        return {}
    loaded: dict[str, CrmSettings] = {}
    for name, block in section.items():
        if name in crm_names:
            # Outbox rows name where they go; a channel and a CRM must not share a name.
            add([f"{name!r} is also the name of a CRM under crms"], ("channels", name))
        if not isinstance(block, dict):
            add(["must be a mapping"], ("channels", name))
            continue
        try:
            loaded[name] = load_channel_settings(block)
        except ValidationError as exc:
            add(exc.messages, ("channels", name))
    return loaded


def configured_channels(channels: dict[str, CrmSettings]) -> dict[str, ConfiguredCrm]:
    """The channels as the write checks see them: each with its adapter class."""
    return {
        name: ConfiguredCrm(name, settings, CHANNEL_TYPES[settings.type].adapter())
        for name, settings in channels.items()
    }
