"""Bot commands: the framework (parse, route, permissions, help) and the command modules."""
