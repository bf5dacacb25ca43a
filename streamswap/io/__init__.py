"""Turns URIs into sources and sinks (PyAV, pyvirtualcam, the preview window), images in and
out, the output label. Knows nothing about faces or models.

May import: `errors`, `files`, `logs`, `redact`, `safeyaml`, `typedconfig`. Never `faces`,
`inference`, `models`, `pipeline` or `service`.
"""
