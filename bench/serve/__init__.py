"""Serve: everything that starts or describes a server.

The launcher (start in the background, alone or as a group of processes, wait for readiness,
stop by PID), the justfile's serve recipes read as data (bench.serve.recipes), the guards a
serve recipe runs before an engine starts, the record of what a recipe started (for the
manifest), the fit check of a serve command against a load (limits, options, fit), quiet long
set-up steps, a smoke test by hand, and engine quirks as data tables (bench.serve.engines), not
as branches.

Imports: the instrument only (the served-record format it owns), and bench's leaf modules.
"""
