"""What every process of the service shares at run time: settings, logs, metrics, and the
reconnect loop of the long-running ones."""
