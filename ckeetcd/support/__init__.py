"""Edges every layer uses: logs, history, files, systemd notify, the state dir."""
