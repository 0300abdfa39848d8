"""Course and badge workflows: the domain services the bot commands and event consumers call."""
