"""What makes streamswap a daemon: the daemon (`daemon`: signals, loading, the pure
`plan_reload`, the control facade the API drives), the pipeline's supervisor
(`supervisor`: re-opens with back-off), systemd notify, the control API and its page,
Prometheus metrics.

The daemon builds nothing: `commands/serve.py` hands it factories (see `control`).
May import: `pipeline` (the stage, stats and observer contracts), `io`, `errors`, `logs`,
`redact`, `safeyaml`, `typedconfig`. Never `wiring`, `faces`, `inference` or `models`.
"""
