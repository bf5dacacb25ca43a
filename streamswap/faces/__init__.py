"""The vision: detectors and their decoders, landmarks, alignment, identity, swappers (one
identity contract, adapters registered by role and contract in `adapters`), paste-back,
masks, tracking, face selection, and the face stages (`stages`) the pipeline runs.

Plain arrays and small dataclasses in and out around model sessions.
May import: `inference` (sessions), `ops`, `io` (reading photos, the label), `pipeline.stage`
and `pipeline.frame_queue` (the stage contract only), `errors`, `logs`, `typedconfig`.
Never `models`, `service`, `wiring` or the commands: resolved models come from `wiring`.
"""
