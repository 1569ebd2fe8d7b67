"""How long a test waits for a subprocess that runs the app.

A subprocess imports textual and often torch, transformers and timm before
it does anything: 17–58 s on a busy 2-core machine (CI may share its cores).
Its timeout ends a hang; it does not judge speed (benchmarks do), so it is
generous. pytest-timeout (pyproject.toml) bounds each test above it.
"""

PROCESS_TIMEOUT = 600
