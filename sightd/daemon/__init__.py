"""The supervisor that starts, watches and restarts every sightd process (`sightd run`), and
what runs it: its children's launcher, the status forwarder, systemd notification, the unit."""
