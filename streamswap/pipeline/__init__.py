"""The real-time machinery: preallocated frame slots, bounded frame queues, one thread per
stage (capture → the stages → one queue and thread per output), drop and back-pressure
policy, timing and stats (`pipeline.Pipeline`, `stage.Stage`).

Knows stages, not models: it runs whatever objects follow `stage.Stage`.
May import: `io` (the Source/Sink contracts, the output label), `errors`, `logs`,
`typedconfig`. Never `faces`, `inference`, `models`, `service` or `wiring`.
"""
