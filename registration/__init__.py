"""The appservice registration YAML that a territory's Synapse loads."""
