"""The registry mirror each agent answers on a port of its own."""
