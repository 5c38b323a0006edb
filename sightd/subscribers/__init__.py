"""Programs that act on label events: print, log, command, webhook, MQTT and plugins."""
