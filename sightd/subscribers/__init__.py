"""Programs that act on label events: print, log, command, webhook, MQTT and plugins.

base.py is the plugin contract, registry.py finds a type by name (built-ins, then the
`sightd.subscribers` entry points), host.py runs one subscriber in its own process, and each
built-in is one module: printer, jsonlog, command (with placeholders), webhook, mqtt.
"""
