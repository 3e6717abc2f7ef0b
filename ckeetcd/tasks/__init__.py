"""Side tasks of the loop: backups, metrics, alerts, the daemon's own certificate."""
