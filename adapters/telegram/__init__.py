"""A Telegram bot as a chat channel: ``sendMessage`` to one chat through the Bot API."""
