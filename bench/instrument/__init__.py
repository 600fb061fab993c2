"""The measuring instrument: one load point from a typed run spec to a run folder.

`measure(spec)` (bench.instrument.measure) is the one way from a `RunSpec` to requests.jsonl,
summary.json, manifest.json and server.jsonl. Here live the schedule, the workload (with its
session and trace-replay kinds and their runner), the transports and their stream readers, the
runner, the records, the metrics (the one definition of every latency), the verdict and the
checks of a run, the scraper of the server's telemetry and its table of metric names, the GPU
sampler (gpu.jsonl) and the energy over a run, the table of what each engine may be sent
(dialect), the manifest and the control-plane probe.

Imports: the standard library, third-party packages, and bench's leaf modules (bench.errors,
bench.paths, bench.__version__). Never results, serve or the lab: they use the instrument.
What the instrument needs to know of a server (the record a serve recipe leaves) it reads in a
format it owns (bench.instrument.served).
"""
