"""A fourth CRM, made from the tests alone: an in-memory task board with deals and webhooks.

It is built only on what a CRM package may use (``adapters.contracts``, ``adapters.webhooks``
and ``domain``) and is known to the connector through one ``register_crm_type`` call in the
test that uses it; nothing in the connector names it.
"""
