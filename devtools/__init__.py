"""Development tools: a headless ComfyUI host for tests and the demo, and API-graph helpers.

Not part of the pack ComfyUI loads; used by ``tests/``, ``bench/`` and ``scripts/``.
"""
