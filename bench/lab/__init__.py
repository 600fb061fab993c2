"""The lab: where the instrument is checked against a measuring standard.

The calibration server (an OpenAI-compatible server whose every chunk's send time is logged),
the accuracy arithmetic against its log, the self-check that `bench run --self-check` runs, and
the client benchmark (`just bench-client`).

Imports: the instrument (it measures with it) and serve (to start the CPU engine for the client
benchmark). Nothing but results' optional self-check and `bench.cli`'s commands import the lab.
"""
