"""What makes streamswap a daemon: the daemon (`daemon`: supervision with back-off, the
pure `plan_reload`, the control facade the API drives), systemd notify, the control API
and its page, Prometheus metrics.

The daemon builds nothing: `commands/serve.py` hands it factories (see `control`).
May import: `pipeline` (the stage, stats and observer contracts), `io`, `errors`, `logs`,
`redact`, `safeyaml`, `typedconfig`. Never `wiring`, `faces`, `inference` or `models`.
"""
